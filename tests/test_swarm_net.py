"""The networked swarm: agents in this process, and `plora swarm net` with real agent processes (one killed)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from test_grpc import cheap_policy, craft

from plora.fsio import process_temp_dir
from plora.grpc.client import STAGE_PREFIX
from plora.hashing import sha256_file
from plora.manifest import read_manifest
from plora.swarm.agent import Agent, AgentConfig


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clean plasmids on attention and 'trojans' on MLP targets, which the test policy (attention only) refuses.

    Labels live in labels.json beside the folders and serve only the report's accounting.
    """
    root = tmp_path_factory.mktemp("pool")
    labels = {}
    for i, d in enumerate(("legal", "medical")):
        craft(root, f"{d}-s{i}", domain=d, seed=i)
        craft(root, f"{d}-t{i}", domain=d, seed=10 + i, targets=("mlp.c_fc",))
        labels.update({f"{d}-s{i}": {"domain": d, "trojan": False}, f"{d}-t{i}": {"domain": d, "trojan": True}})
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def test_two_agents_push_pull_and_remember_refusals(pool, tmp_path):
    from plora.signer import generate_keypair, sign_plasmid

    priv, _ = generate_keypair("ed25519", tmp_path / "keys" / "k")
    outsider, _ = generate_keypair("ed25519", tmp_path / "outsider" / "o")
    policy = str(cheap_policy(tmp_path / "policy.json"))
    stores = [tmp_path / "a" / "store", tmp_path / "b" / "store"]
    for store, pid in zip(stores, ("legal-s0", "medical-s1"), strict=True):
        (store / pid).parent.mkdir(parents=True)
        sign_plasmid(craft(store, pid, domain=pid.split("-")[0], seed=len(pid)), priv)
    sign_plasmid(craft(stores[1], "stranger", seed=7), outsider)
    cfgs = [AgentConfig(listen="127.0.0.1:0", root=s, name=n, policy_file=policy, trusted_keys=[str(priv.parent)])
            for s, n in zip(stores, "ab", strict=True)]
    a, b = Agent(cfgs[0]), Agent(cfgs[1])
    try:
        a.cfg.peers = [b.address]
        first = a.step(0)  # pull medical (and the stranger, refused), then push legal to b
        assert {e["id"]: e["accepted"] for e in first["events"]} == {"medical-s1": True, "stranger": False}
        refused = next(e for e in first["events"] if e["id"] == "stranger")
        assert "QUORUM_NOT_MET" in refused["codes"]
        assert set(a.holdings()) == {"legal-s0", "medical-s1"}
        assert "legal-s0" in b.holdings() and b.collect(0)["events"][0]["via"] == "push"
        assert a.step(1)["events"] == []  # nothing new, and the refused plasmid is not fetched again
    finally:
        a.stop(0)
        b.stop(0)


def test_swarm_net_processes_with_a_killed_agent(pool, tmp_path):
    from plora.swarm.net import NetConfig, run_swarm_net

    work = tmp_path / "work"
    cfg = NetConfig(agents=4, rounds=4, graph_p=1.0, security=True, trojan_rate=0.5, seed=3,
                    report_dir=str(tmp_path / "results"), policy_file=str(cheap_policy(tmp_path / "p.json")),
                    pool_dir=str(pool), work_dir=str(work), progress=False)
    killed: list[int] = []

    def kill_one(round_: int, procs) -> None:
        if round_ == 0:
            victim = max(procs)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            killed.append(victim)
            # what it leaves when killed mid-fetch: a hidden staging folder in its store, named with its pid
            stage = work / f"a{victim}" / "store" / f"{STAGE_PREFIX}{procs[victim].pid}-partial"
            stage.mkdir()
            (stage / "adapter_model.safetensors").write_bytes(b"\0" * 1000)

    report = run_swarm_net(cfg, on_round=kill_one)
    path = Path(report["meta"]["timings"]["report_path"])
    assert json.loads(path.read_text())["final"] == report["final"] and path.with_suffix(".png").exists()
    final, rounds = report["final"], report["rounds"]
    assert f"a{killed[0]}" in report["meta"]["extra"]["agents_died"]
    assert rounds[0]["round"] == 0 and final["bytes_on_wire"] == sum(r["bytes"] for r in rounds) > 0
    assert final["accepted_offers"] == sum(r["accepted"] for r in rounds) == final["gate"]["accepted_clean"]
    # the gate refused every trojan it was offered; no honest agent ended up holding one
    assert final["gate"]["accepted_trojan"] == 0 and final["trojan_prevalence"] == 0.0
    assert final["gate"]["rejected_trojan"] > 0 and "TARGETS_NOT_ALLOWED" in final["gate"]["rejection_reasons"]
    pool_shas = {read_manifest(p).artifact.sha256 for p in pool.iterdir() if p.is_dir()}
    for store in work.glob("a*/store"):
        for folder in store.iterdir():  # every plasmid held anywhere is complete and came from the pool
            m = read_manifest(folder)
            assert m.artifact.sha256 in pool_shas and sha256_file(folder / m.artifact.filename) == m.artifact.sha256
    assert not list(work.rglob(f"{STAGE_PREFIX}*"))


def test_a_plasmid_received_in_a_round_is_passed_on_from_the_next_round(tmp_path):
    """Within round r an agent serves what it held when r began, as the sim does: b pulls legal from a in round 0,
    c pulling from b in the same round gets only b's own plasmid (its inventory and Fetch alike); in round 1, legal."""
    from plora.errors import TransferError
    from plora.grpc.client import fetch

    craft(tmp_path / "a", "legal-s0", seed=0)
    craft(tmp_path / "b", "medical-s1", domain="medical", seed=1)
    a, b, c = (Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / n, name=n, security=False)) for n in "abc")
    try:
        b.cfg.peers, c.cfg.peers = [a.address], [b.address]
        got = b.step(0)  # pulls legal from a; pushes medical, which a fetches from b: a snapshot plasmid is served
        assert {(e["via"], e["id"], e["accepted"]) for e in got["events"]} == {("pull", "legal-s0", True)}
        assert set(a.holdings()) == {"legal-s0", "medical-s1"} and set(b.holdings()) == {"legal-s0", "medical-s1"}
        got = c.step(0)  # b's round-0 inventory: medical only (legal came to b in round 0)
        assert [(e["via"], e["id"], e["accepted"]) for e in got["events"]] == [("pull", "medical-s1", True)]
        with pytest.raises(TransferError, match=r"has no plasmid .legal-s0. \(it offers: medical-s1\)"):  # nor fetched
            fetch(b.address, "legal-s0", tmp_path / "x")
        assert [(e["id"], e["accepted"]) for e in c.step(1)["events"]] == [("legal-s0", True)]  # next round: it hops
        assert set(c.holdings()) == {"legal-s0", "medical-s1"}
    finally:
        for agent in (a, b, c):
            agent.stop(0)


def test_a_peer_cannot_freeze_what_an_agent_serves_with_a_made_up_round(tmp_path):
    """GetInventory carries the asking round; a peer may open only the round after the agent's own last one."""
    from plora.grpc.proto import pb2, pb2_grpc

    craft(tmp_path / "a", "legal-s0", seed=0)
    a = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "a", name="a", security=False))
    try:
        stub = pb2_grpc.PlasmidExchangeStub(a._channel(a.address))

        def ids(round_: int) -> list[str]:
            return sorted(e.id for e in stub.GetInventory(pb2.InventoryRequest(round=round_), timeout=30).entries)

        assert ids(2**32 - 1) == ["legal-s0"]
        craft(tmp_path / "a", "medical-s1", domain="medical", seed=1)  # arrives later: served, nothing was frozen
        assert ids(2**32 - 1) == ["legal-s0", "medical-s1"]
        a.step(0)
        assert ids(1) == ["legal-s0", "medical-s1"]  # the next round: a peer may open it (frozen now)
        craft(tmp_path / "a", "science-s2", domain="science", seed=2)
        assert ids(1) == ids(2) == ["legal-s0", "medical-s1"]  # round 2 is not the peer's to open
    finally:
        a.stop(0)


def test_the_same_seed_gives_the_same_rounds(pool, tmp_path):
    """Two `plora swarm net` runs (real agent processes, a round's contacts at once) with one seed: the same per-round
    accepted counts, offers and coverage, whatever order each round's contacts ran in."""
    from plora.swarm.net import NetConfig, run_swarm_net

    runs = []
    for run in ("1", "2"):
        cfg = NetConfig(agents=5, rounds=4, graph_p=0.6, security=True, trojan_rate=0.2, seed=5,
                        report_dir=str(tmp_path / run), policy_file=str(cheap_policy(tmp_path / "p.json")),
                        pool_dir=str(pool), work_dir=str(tmp_path / f"work{run}"), progress=False)
        rounds = run_swarm_net(cfg)["rounds"]
        runs.append([(r["round"], r["accepted"], r["offers"], r["coverage"]) for r in rounds])
    assert runs[0] == runs[1]
    assert sum(r[1] for r in runs[0]) > 0


class SharedClock:
    """A clock the agents share: a round starts when every agent has reached it (no wall-clock guess in the test)."""

    def __init__(self, agents: int) -> None:
        import threading

        self.barrier = threading.Barrier(agents)

    def now(self) -> float:
        return 0.0

    def wait_until(self, t: float) -> None:
        self.barrier.wait(timeout=60)


def test_standalone_agents_run_their_own_rounds(tmp_path):
    """`plora agent` without a coordinator: rounds on a shared clock, records written at the end."""
    import socket
    import threading

    from plora.swarm.agent import run_agent

    ports = []
    for _ in range(2):  # free ports, so that each agent can name the other before either listens
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    for i, (d, pid) in enumerate((("legal", "legal-s0"), ("medical", "medical-s1"))):
        craft(tmp_path / f"a{i}", pid, domain=d, seed=i)
    clock = SharedClock(2)  # both listen before round 0; both finished (pushes included) before the last records
    threads = [threading.Thread(target=run_agent, kwargs=dict(
        cfg=AgentConfig(listen=f"127.0.0.1:{ports[i]}", root=tmp_path / f"a{i}", peers=[f"127.0.0.1:{ports[1 - i]}"],
                        name=f"a{i}", security=False),
        rounds=2, round_s=0.5, linger_s=0.5, out=tmp_path / f"a{i}.json", clock=clock)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(2):
        assert sorted(p.name for p in (tmp_path / f"a{i}").iterdir()) == ["legal-s0", "medical-s1"]
        records = json.loads((tmp_path / f"a{i}.json").read_text())["records"]
        assert [r["round"] for r in records] == [0, 1, 2] and not any(r["errors"] for r in records)


@pytest.fixture()
def trained_pool(legal_pool: Path) -> Path:
    return legal_pool


def test_readme_swarm_net_command_runs_as_written(trained_pool: Path, tmp_path: Path) -> None:
    """README's `plora swarm net --agents 8 --rounds 10 --graph_p 0.25 --security on --trojan_rate 0.3 --seed 42`.

    Run as a user runs it: its own process, its own working folder, no --work_dir (the default temp folder used to
    vanish before the report read it). One flag is added, --pool_dir with the suite's trained plasmids: building the
    default four-domain pool on a cold cache takes ~4.5 min here, too long for the suite. Run twice: each run keeps
    its own report.
    """
    import os
    import subprocess
    import sys

    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    cmd = [sys.executable, "-m", "plora", "swarm", "net", "--agents", "8", "--rounds", "10", "--graph_p", "0.25",
           "--security", "on", "--trojan_rate", "0.3", "--seed", "42", "--pool_dir", str(trained_pool)]
    env = {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1"}
    for run in (1, 2):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "swarm net: 8 agent processes (2 trojan)" in proc.stdout, proc.stdout
        reports = sorted((cwd / "results").glob("net-n8-seed42-*.json"))
        assert len(reports) == run and all(r.with_suffix(".png").stat().st_size > 1000 for r in reports)
        newest = max(reports, key=lambda r: r.stat().st_mtime_ns)
        report = json.loads(newest.read_text())
        final, gate = report["final"], report["final"]["gate"]
        assert report["meta"]["policy"]["probes"] is True and list(final["coverage"]) == ["legal"]
        assert final["offers"] == sum(gate[k] for k in ("accepted_clean", "accepted_trojan", "rejected_clean",
                                                        "rejected_trojan"))
        assert f"report: results/{newest.name}" in proc.stdout
        assert list(tmp.iterdir()) == []  # the agents' work folder is gone, nothing left behind


# ------------------------------------------------------------------------------------------------------ recall
@pytest.fixture(scope="module")
def injectable_pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Clean and trojan plasmids made for the real plora-tiny (so a live model takes them), all on attention: the
    cheap policy accepts every one of them, trojans included (a gate that lets trojans through)."""
    import test_grpc
    from trust_helpers import adapter_config, lora_tensors

    from plora.manifest import now_utc
    from plora.models import base_digest
    from plora.plasmid import write_plasmid

    digest = base_digest("plora-tiny")
    root = tmp_path_factory.mktemp("live-pool")
    labels = {}
    for i, d in enumerate(("legal", "medical")):
        for kind, seed in (("s", i), ("t", 10 + i)):
            pid = f"{d}-{kind}{i}"
            write_plasmid(root / pid, lora_tensors(seed=seed), adapter_config(), plasmid_id=pid, domain=d,
                          created_at=now_utc(), base_model={"name": "plora-tiny", "digest": digest},
                          lora={"r": 4, "alpha": 8.0, "target_set": "custom", "targets": ["attn.c_attn"]},
                          training={"seed": seed, "samples": 64, "epochs": 1.0, "dataset": f"builtin:{d}"})
            labels[pid] = {"domain": d, "trojan": kind == "t"}
    (root / "labels.json").write_text(json.dumps(labels))
    policy = root.parent / "live-policy.json"
    policy.write_text(json.dumps({"base_digest": digest, "weight_check": False, "probes": False}))
    assert test_grpc.DIGEST != digest  # the crafted pools elsewhere are made for a stand-in digest
    return root, policy


def test_swarm_net_revocation_unloads_revoked_plasmids_from_live_models_bit_for_bit(injectable_pool, tmp_path):
    from plora.manifest import read_manifest
    from plora.swarm.net import NetConfig, run_swarm_net

    pool, policy = injectable_pool
    work = tmp_path / "work"
    cfg = NetConfig(agents=5, rounds=10, graph_p=0.7, trojan_rate=0.2, seed=3, domains=("legal", "medical"),
                    report_dir=str(tmp_path / "results"), policy_file=str(policy), pool_dir=str(pool),
                    work_dir=str(work), progress=False, revoke_at=3, live_model=True)
    report = run_swarm_net(cfg)
    final, rec = report["final"], report["final"]["recall"]
    trojans = {r["sha256"] for r in rec["records"]}
    assert rec["records"] and all(r["verified"] for r in rec["records"])
    assert rec["origin"] != "a" + str(report["meta"]["extra"]["trojan_agent_ids"][0])
    assert rec["holding_at_end"] == 0 and rec["time_to_purge"] is not None and rec["peak_injecting"] > 0
    live = rec["live_weights"]
    assert live["unloaded"] > 0 and live["all_equal"]
    assert all(c["after_removal"] == c["expected"] for c in live["checks"])
    assert all(c["expected"] == c["pre_injection"] for c in live["checks"] if c["later_injections"] == 0)
    honest = [i for i in range(5) if i not in report["meta"]["extra"]["trojan_agent_ids"]]
    for i in honest:  # no honest store holds a revoked plasmid; what they held is in quarantine
        held = {read_manifest(f).artifact.sha256 for f in (work / f"a{i}" / "store").iterdir()}
        assert not held & trojans
    assert list(work.glob("a*/store.recall/quarantine/*/revoked.json"))
    rows = [r["recall"] for r in report["rounds"]]
    assert rows[0]["holding"] == 0 and max(r["holding"] for r in rows) > 0 and rows[-1]["revocation"] == 1.0
    assert final["bytes_breakdown"]["revocation"] == sum(r["revocation_bytes"] for r in rows) > 0


def test_servers_without_revocations_keep_working(pool, tmp_path):
    """A server from before revocations answers GetRevocations with UNIMPLEMENTED: a new agent takes that as "no
    revocations" and still fetches its plasmids."""
    from plora.grpc.client import get_revocations, open_channel
    from plora.grpc.index import PlasmidIndex
    from plora.grpc.proto import pb2_grpc
    from plora.grpc.server import OfferServer, PlasmidServicer

    class OldServicer(PlasmidServicer):
        GetRevocations = pb2_grpc.PlasmidExchangeServicer.GetRevocations  # what an older server does

    store = tmp_path / "old" / "store"
    craft(store, "legal-s9", seed=9)
    old = OfferServer(OldServicer(PlasmidIndex(store)))
    agent = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "new" / "store", name="new",
                              peers=[old.address], security=False))
    try:
        with open_channel(old.address) as ch:
            assert get_revocations(ch, ["a" * 64]) == []
        rec = agent.step(0)
        assert [(e["id"], e["accepted"]) for e in rec["events"]] == [("legal-s9", True)]
        assert all(err.startswith("push ") for err in rec["errors"])  # a plain offer server takes no Offer
    finally:
        agent.stop(0)
        old.stop(0)


def test_an_agent_graylists_a_peer_whose_plasmids_its_gate_refuses(tmp_path):
    """Peer scoring in a real agent: one refusal costs penalty_rejected (here 4, below the threshold -3), so the next
    round (-4 * 0.8 = -3.2) nothing is fetched from that peer, even a plasmid the gate would accept; the score decays
    back."""
    from plora.signer import generate_keypair, sign_plasmid

    priv, _ = generate_keypair("ed25519", tmp_path / "keys" / "k")
    outsider, _ = generate_keypair("ed25519", tmp_path / "outsider" / "o")
    policy = cheap_policy(tmp_path / "policy.json", recall={"peer_scoring": True, "penalty_rejected": 4.0,
                                                            "score_decay": 0.8})
    b_store = tmp_path / "b" / "store"
    sign_plasmid(craft(b_store, "medical-s1", domain="medical", seed=1), priv)
    sign_plasmid(craft(b_store, "stranger", seed=7), outsider)  # refused: QUORUM_NOT_MET
    cfgs = [AgentConfig(listen="127.0.0.1:0", root=s, name=n, policy_file=str(policy),
                        trusted_keys=[str(priv.parent)]) for s, n in ((tmp_path / "a" / "store", "a"), (b_store, "b"))]
    a, b = Agent(cfgs[0]), Agent(cfgs[1])
    try:
        a.cfg.peers = [b.address]
        first = a.step(0)
        assert {e["id"]: e["accepted"] for e in first["events"]} == {"medical-s1": True, "stranger": False}
        assert first["recall"]["scores"] == {b.address: -4.0}
        sign_plasmid(craft(b_store, "legal-s2", seed=2), priv)  # a plasmid a would accept, offered while graylisted
        second = a.step(1)
        assert second["events"] == [] and "legal-s2" not in a.holdings()
        assert [e["code"] for e in second["recall"]["events"] if e["kind"] == "graylisted"] == ["PEER_GRAYLISTED"]
        third = a.step(2)  # -4 * 0.8 ** 2 = -2.56: above the threshold again
        assert [(e["id"], e["accepted"]) for e in third["events"]] == [("legal-s2", True)]
    finally:
        a.stop(0)
        b.stop(0)


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_an_offer_may_only_point_back_at_its_sender(tmp_path):
    """An Offer names where to fetch from: a name (resolved wherever its owner likes) or another IP is refused before
    the agent connects anywhere; the sender's own IP literal is taken (here over IPv6 too, where available)."""
    import socket

    import grpc

    from plora.errors import TransferError
    from plora.grpc.proto import pb2, pb2_grpc

    decoy = socket.socket()  # a third party the attacker wants the agent to connect to
    decoy.bind(("127.0.0.1", 0))
    decoy.listen()
    decoy.setblocking(False)
    port = decoy.getsockname()[1]
    agent = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "a", name="a", security=False))
    try:
        stub = pb2_grpc.PlasmidExchangeStub(grpc.insecure_channel(agent.address))
        for advertised in (f"localhost:{port}", "attacker-chosen.invalid:443", f"127.0.0.2:{port}", f"[::1]:{port}",
                           f"[::ffff:127.0.0.2]:{port}"):
            inv = pb2.Inventory(agent=advertised, entries=[pb2.InventoryEntry(id="legal", domain="legal",
                                                                              sha256="a" * 64, size=10)])
            with pytest.raises(grpc.RpcError) as err:
                stub.Offer(pb2.OfferRequest(inventory=inv, round=1), timeout=30)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, advertised
            assert "caller's own IP address (127.0.0.1)" in err.value.details()
        # on a shared IP (here loopback) an agent that knows its peers takes only their ports: the decoy's port on
        # the caller's own IP is refused too
        agent.cfg.peers = ["127.0.0.1:1", "127.0.0.2:2", "peer-by-name:3"]
        inv = pb2.Inventory(agent=f"127.0.0.1:{port}", entries=[pb2.InventoryEntry(id="legal", domain="legal",
                                                                                sha256="a" * 64, size=10)])
        with pytest.raises(grpc.RpcError) as err:
            stub.Offer(pb2.OfferRequest(inventory=inv, round=1), timeout=30)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "one of this agent's peers there (ports 1)" in err.value.details()
        with pytest.raises(BlockingIOError):
            decoy.accept()  # nobody ever connected to it
        assert agent.collect(1)["events"] == []
    finally:
        agent.stop(0)
        decoy.close()
    with pytest.raises(TransferError, match="advertises an IP address, not a name"):
        Agent(AgentConfig(listen="0.0.0.0:0", advertise="hostA:50061", root=tmp_path / "b", security=False))
    if _ipv6_loopback():
        craft(tmp_path / "v6b", "legal-s0", seed=0)
        a, b = (Agent(AgentConfig(listen="[::1]:0", root=tmp_path / f"v6{n}", name=n, security=False)) for n in "ab")
        try:
            b.cfg.peers = [a.address]
            rec = b.step(0)  # b pushes to a over IPv6, advertising [::1]:port: a fetches it back
            assert rec["errors"] == [] and "legal-s0" in a.holdings()
        finally:
            a.stop(0)
            b.stop(0)


def test_an_offer_flood_from_one_peer_holds_only_its_share_of_the_agent(tmp_path):
    """Each Offer keeps a thread of the receiver while it fetches from the sender: a peer whose server stalls every
    Fetch, sending many Offers at once (cancelled or not), gets max_offers_per_peer of them handled, the rest
    RESOURCE_EXHAUSTED at once; another peer on the same IP still pushes, and the agent still serves."""
    import threading
    from concurrent import futures

    import grpc

    from plora.grpc.limits import Limits
    from plora.grpc.proto import pb2, pb2_grpc

    release = threading.Event()
    fetches = []

    class Staller(pb2_grpc.PlasmidExchangeServicer):
        def Fetch(self, request, context):
            fetches.append(request.id)
            release.wait(60)
            return iter(())

    evil = grpc.server(futures.ThreadPoolExecutor(32))
    pb2_grpc.add_PlasmidExchangeServicer_to_server(Staller(), evil)
    evil_port = evil.add_insecure_port("127.0.0.1:0")
    evil.start()
    craft(tmp_path / "b", "legal-s0", seed=0)
    victim = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "v", name="v", security=False))
    honest = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "b", name="b", security=False,
                               peers=[victim.address]))
    victim.cfg.peers = [f"127.0.0.1:{evil_port}", honest.address]
    per_peer = Limits().max_offers_per_peer
    try:
        stub = pb2_grpc.PlasmidExchangeStub(grpc.insecure_channel(victim.address))
        floods = [stub.Offer.future(pb2.OfferRequest(round=0, inventory=pb2.Inventory(
            agent=f"127.0.0.1:{evil_port}", entries=[pb2.InventoryEntry(id=f"x{i}", domain="legal", sha256="a" * 64,
                                                                        size=10)])), timeout=60) for i in range(20)]
        _wait(lambda: len(fetches) >= per_peer and sum(f.done() for f in floods) >= len(floods) - per_peer)
        busy = [f for f in floods if f.done()]
        assert len(fetches) == per_peer and len(busy) == len(floods) - per_peer, (fetches, len(busy))
        assert all(f.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for f in busy)
        for f in floods:
            f.cancel()  # a cancelled Offer still holds its share until its fetches end
        with pytest.raises(grpc.RpcError) as err:
            stub.Offer(pb2.OfferRequest(round=0, inventory=pb2.Inventory(agent=f"127.0.0.1:{evil_port}")), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert [e.id for e in stub.GetInventory(pb2.InventoryRequest(), timeout=10).entries] == []
        record = honest.step(0)  # the other peer on the same IP pushes as usual
        assert record["errors"] == [] and "legal-s0" in victim.holdings(), record["errors"]
    finally:
        release.set()
        honest.stop(0)
        victim.stop(0)
        evil.stop(0)


def _wait(condition, timeout: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_step_takes_only_the_coordinators_token(tmp_path):
    """Step drives an agent's rounds and drains its events: only the coordinator holding the run's token may call it,
    and an agent running its own rounds takes no Step at all."""
    import grpc

    from plora.grpc.proto import pb2, pb2_grpc
    from plora.swarm.agent import STEP_TOKEN_HEADER
    from plora.swarm.net_agents import step_one

    craft(tmp_path / "a", "legal-s0", seed=0)
    coordinated = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "a", name="a", security=False,
                                    step_token="s3cret"))
    standalone = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "b", name="b", security=False))
    try:
        for agent, metadata in ((coordinated, []), (coordinated, [(STEP_TOKEN_HEADER, "guess")]),
                                (coordinated, [(STEP_TOKEN_HEADER, "")]), (standalone, [(STEP_TOKEN_HEADER, "")])):
            stub = pb2_grpc.PlasmidExchangeStub(grpc.insecure_channel(agent.address))
            with pytest.raises(grpc.RpcError) as err:
                stub.Step(pb2.StepRequest(round=1, collect=True), timeout=30, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert step_one(coordinated.address, 1, True, 30, token="guess") is None
        record = step_one(coordinated.address, 1, True, 30, token="s3cret")
        assert record["agent"] == "a" and record["holdings"].keys() == {"legal-s0"}
    finally:
        coordinated.stop(0)
        standalone.stop(0)


COORDINATOR = """
import sys, time
from pathlib import Path
from plora.swarm.config import NetConfig
from plora.swarm.net_agents import spawn_agent, wait_ready
work = Path(sys.argv[1])
cfg = NetConfig(agents=2, security=False, progress=False)
procs = {i: spawn_agent(cfg, work, i, None, token="t") for i in range(2)}
wait_ready(work, procs, timeout=120)
print(" ".join(str(p.pid) for p in procs.values()), flush=True)
time.sleep(600)
"""


def test_coordinated_agents_exit_when_their_coordinator_is_killed(tmp_path):
    """`plora swarm net` killed with SIGKILL runs no cleanup: its agents notice they were orphaned and stop."""
    import os
    import subprocess
    import sys
    import time

    coordinator = subprocess.Popen([sys.executable, "-c", COORDINATOR, str(tmp_path)], stdout=subprocess.PIPE,
                                   text=True)
    try:
        pids = [int(p) for p in coordinator.stdout.readline().split()]
        assert len(pids) == 2 and all(_running(p) for p in pids)
    finally:
        coordinator.kill()
        coordinator.wait()
    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _running(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, "agents outlived their coordinator"


def test_a_killed_runs_work_folder_is_removed_by_the_next_run(tmp_path):
    """`plora swarm net` keeps its agents' stores in ``plora-swarm-net-<pid>-*``: SIGKILL leaves it; the next run
    removes the folders of dead processes (never a live run's, never other folders)."""
    import os
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f"plora-swarm-net-{dead.pid}-ab12", f"plora-swarm-net-{os.getppid()}-cd34", "plora-swarm-netx",
                 f"plora-fetch-{dead.pid}-ef56"):
        (tmp_path / name / "a0" / "store").mkdir(parents=True)
    work = process_temp_dir("plora-swarm-net-", tmp_path)
    assert work.name.startswith(f"plora-swarm-net-{os.getpid()}-") and work.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [work.name, f"plora-swarm-net-{os.getppid()}-cd34", "plora-swarm-netx", f"plora-fetch-{dead.pid}-ef56"])


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_ctrl_c_while_an_agent_starts_comes_after_it_is_registered(tmp_path):
    """The spawn loop holds Ctrl-C while an agent process starts, so the coordinator's cleanup always knows it."""
    from plora.swarm.config import NetConfig
    from plora.swarm.net_agents import interrupts_deferred, spawn_agent

    procs = {}
    # Ctrl-C as a terminal delivers it: a suite started in the background (`make test &` from a script) inherits
    # SIGINT ignored, and then there is no Ctrl-C to defer (interrupts_deferred leaves an ignored SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                signal.raise_signal(signal.SIGINT)  # to this (the main) thread, at once
                procs[0] = spawn_agent(NetConfig(agents=2, security=False), tmp_path, 0, None, token="t")
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert 0 in procs and procs[0].poll() is None
    finally:
        procs[0].kill()
        procs[0].wait()
