"""Offer/fetch over real gRPC servers on loopback ports the OS picks: verification, limits, faults.

The plasmids are real safetensors folders with plora-tiny shapes, signed with real keys;
the gate runs its cheap stages (probes and the weight detector are off in the policy used here, so no torch).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from plora.cli.main import app
from plora.errors import TransferError
from plora.grpc.checks import gate_check, signature_check
from plora.grpc.client import STAGE_PREFIX, fetch, get_inventory
from plora.grpc.limits import Limits
from plora.grpc.proto import pb2, pb2_grpc
from plora.grpc.server import serve
from plora.manifest import now_utc
from plora.plasmid import write_plasmid

runner = CliRunner()


SHAPES = {"attn.c_attn": (128, 384), "mlp.c_fc": (128, 512)}  # plora-tiny (GPT-2, 128 wide): (in, out)
DIGEST = "ab" * 32  # the base weights digest the crafted plasmids and the test policies agree on


def craft(out: Path, pid: str, domain: str = "legal", seed: int = 0, targets: tuple[str, ...] = ("attn.c_attn",),
          layers: int = 4) -> Path:
    """A complete plasmid with plora-tiny shapes (``layers`` > 4 adds extra factors: a bigger artifact)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for t in targets:
            fan_in, fan_out = SHAPES[t]
            prefix = f"base_model.model.transformer.h.{layer}.{t}"
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.05, (4, fan_in)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(0, 0.01, (fan_out, 4)).astype(np.float32)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "plora-tiny", "r": 4,
              "lora_alpha": 8.0, "lora_dropout": 0.0, "target_modules": sorted(targets), "bias": "none",
              "fan_in_fan_out": True, "inference_mode": True}
    write_plasmid(out / pid, tensors, config, plasmid_id=pid, domain=domain, created_at=now_utc(),
                  base_model={"name": "plora-tiny", "digest": DIGEST},
                  lora={"r": 4, "alpha": 8.0, "target_set": "custom", "targets": list(targets)},
                  training={"seed": seed, "samples": 64, "epochs": 1.0, "dataset": f"builtin:{domain}"})
    return out / pid


def cheap_policy(path: Path, **extra: object) -> Path:
    """The real gate without its probes and weight detector (no torch): schema, base, tensors, hashes, signatures."""
    body = {"base_digest": DIGEST, "weight_check": False, "probes": False, "allowed_targets": ["attention"], **extra}
    path.write_text(json.dumps(body))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A served root with a signed plasmid, a tampered one and one signed by an untrusted key."""
    from plora.signer import generate_keypair, sign_plasmid

    base = tmp_path_factory.mktemp("grpc")
    trusted, _ = generate_keypair("ed25519", base / "keys" / "alice")
    outsider, _ = generate_keypair("ed25519", base / "outsider" / "carol")
    root = base / "root"
    sign_plasmid(craft(root, "legal"), trusted)
    tampered = craft(root, "tampered", seed=3)
    sign_plasmid(tampered, trusted)
    art = tampered / "adapter_model.safetensors"
    data = bytearray(art.read_bytes())
    data[-5] ^= 0x01  # same size, different bytes: only the hash can tell
    art.write_bytes(bytes(data))
    sign_plasmid(craft(root, "stranger", seed=5), outsider)
    return {"base": base, "root": root, "keys": base / "keys", "policy": cheap_policy(base / "policy.json")}


@pytest.fixture(scope="module")
def server(world: dict[str, Path]):
    srv = serve(world["root"], port=0)
    yield srv
    srv.stop(0)


def leftovers(folder: Path) -> list[str]:
    """Staging folders anywhere under ``folder`` (a fetch stages inside its destination)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(f"{STAGE_PREFIX}*"))


def test_fetch_cli_accepts_verified_plasmid(world, server, tmp_path):
    dest = tmp_path / "received"
    res = runner.invoke(app, ["fetch", "--from", server.address, "--id", "legal", "--dest", str(dest),
                              "--trusted-keys", str(world["keys"]), "--policy_file", str(world["policy"])])
    assert res.exit_code == 0, res.output
    assert "accepted legal" in res.output
    for name in ("plora.yml", "adapter_config.json", "adapter_model.safetensors"):
        assert (dest / "legal" / name).read_bytes() == (world["root"] / "legal" / name).read_bytes()
    assert leftovers(tmp_path) == [] and sorted(os.listdir(dest)) == ["legal"]


def test_tampered_and_untrusted_are_refused_with_reasons(world, server, tmp_path):
    dest = tmp_path / "received"
    args = ["--dest", str(dest), "--trusted-keys", str(world["keys"]), "--policy_file", str(world["policy"])]
    res = runner.invoke(app, ["fetch", "--from", server.address, "--id", "tampered", *args])
    assert res.exit_code == 1 and "ARTIFACT_SHA_MISMATCH" in res.output, res.output
    for _ in range(2):  # refused twice (within the same second, likely): two quarantined copies, neither in the other
        res = runner.invoke(app, ["fetch", "--from", server.address, "--id", "stranger", *args,
                                  "--quarantine", str(tmp_path / "q")])
        assert res.exit_code == 1 and "SIGNER_UNTRUSTED" in res.output and "QUORUM_NOT_MET" in res.output, res.output
    assert not dest.exists() or os.listdir(dest) == []
    assert leftovers(tmp_path) == []
    quarantined = list((tmp_path / "q").iterdir())
    assert len(quarantined) == 2
    for folder in quarantined:
        assert "QUORUM_NOT_MET" in (folder / "rejected.json").read_text()
        assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == []


def test_bad_network_input_is_one_line_and_exit_2(world, server, tmp_path, capsys):
    from plora.cli.main import main
    from plora.grpc.tls import make_test_pki

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    pki = make_test_pki(tmp_path / "pki")
    fetch_args = ["fetch", "--from", server.address, "--id", "legal", "--no-gate", "--dest"]
    never = tmp_path / "never"  # a --dest that bad input must not even create
    for args, expected in ((fetch_args + [str(afile)], "exists and is not a folder"),
                           (fetch_args + ["/proc/x"], "cannot create the destination folder /proc/x"),
                           (fetch_args + [str(tmp_path / "d"), "--tls-ca", str(pki["ca_cert"]), "--tls-cert",
                                          str(pki["client_key"]), "--tls-key", str(pki["client_cert"])], "swapped"),
                           (fetch_args + [str(never), "--quarantine", str(afile)], "exists and is not a folder"),
                           (fetch_args + [str(never), "--quarantine", str(never / "q")], "inside the destination"),
                           (fetch_args + [str(never), "--quarantine", str(never)], "inside the destination"),
                           (fetch_args + [str(never), "--wait", "-5"], "--wait must be"),
                           (fetch_args + [str(never), "--trusted-keys", str(world["keys"]), "--quorum", "2"],
                            "quorum 2 can never be met: the trusted keys hold 1 distinct key(s)"),
                           (["fetch", "--from", server.address, "--id", "../up", "--dest", str(never)],
                            "invalid plasmid id")):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err and afile.read_text() == "not a folder" and not never.exists(), (args, err)
    offer = [sys.executable, "-m", "plora", "offer", "--root", str(world["root"])]
    busy = socket.create_server(("127.0.0.1", 0))  # a port another program listens on
    for args, expected in ((["--port", str(busy.getsockname()[1])], f"port {busy.getsockname()[1]} is in use"),
                           (["--port", "99999"], "invalid port 99999"), (["--port", "-1"], "invalid port -1"),
                           (["--port", "65536"], "invalid port 65536"),
                           (["--port", "0", "--tls-cert", str(pki["server_key"]), "--tls-key", str(pki["server_cert"])],
                            "swapped"),
                           (["--port", "0", "--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["client_key"])],
                            "does not belong to the certificate")):
        # a subprocess with a timeout: an offer that wrongly starts serving would otherwise never return
        res = subprocess.run(offer + args, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1, (args, res.stderr)
        assert res.stderr.startswith("error: ") and expected in res.stderr, (args, res.stderr)
    busy.close()


def test_fetch_replaces_an_earlier_plasmid_but_nothing_else(world, server, tmp_path, capsys):
    from plora.cli.main import main

    dest = tmp_path / "received"
    older = craft(dest, "legal", seed=9)  # an earlier plasmid of the same id, other bytes: a re-fetch updates it
    served = (world["root"] / "legal" / "adapter_model.safetensors").read_bytes()
    assert (older / "adapter_model.safetensors").read_bytes() != served
    assert fetch(server.address, "legal", dest).accepted
    assert (dest / "legal" / "adapter_model.safetensors").read_bytes() == served and leftovers(tmp_path) == []
    (tmp_path / "empty" / "legal").mkdir(parents=True)  # an empty folder holds nothing to lose
    assert fetch(server.address, "legal", tmp_path / "empty").accepted

    notes = tmp_path / "notes"  # a user's folder that bears the id a server offers
    (notes / "legal" / "sub").mkdir(parents=True)
    (notes / "legal" / "notes.txt").write_text("mine")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "legal").symlink_to(dest / "legal")
    half = tmp_path / "half" / "legal"  # plasmid files but no plora.yml: not recognisably a plasmid
    half.mkdir(parents=True)
    (half / "adapter_config.json").write_text("{}")
    deadline = time.monotonic() + 10
    while server.servicer.slots.in_use() and time.monotonic() < deadline:  # the last send is counted when it frees
        time.sleep(0.01)
    sent = server.servicer.bulk.bytes_sent
    for where, why in ((notes, "also holds notes.txt, sub"), (tmp_path / "links", "is a symbolic link"),
                       (tmp_path / "half", "has no plora.yml")):
        with pytest.raises(TransferError, match=why):
            fetch(server.address, "legal", where)
        with pytest.raises(SystemExit) as exit_:
            main(["fetch", "--from", server.address, "--id", "legal", "--dest", str(where), "--no-gate"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and why in err, err
    assert server.servicer.bulk.bytes_sent == sent  # refused before any transfer
    assert (notes / "legal" / "notes.txt").read_text() == "mine" and (notes / "legal" / "sub").is_dir()
    assert (tmp_path / "links" / "legal").is_symlink() and os.listdir(half) == ["adapter_config.json"]
    assert leftovers(tmp_path) == []


def test_gate_runs_on_staged_folder(world, server, tmp_path):
    strict = cheap_policy(tmp_path / "strict.json", allowed_ranks=[8])
    from plora.gate.policy import load_policy

    r = fetch(server.address, "legal", tmp_path / "d", checks=[gate_check(load_policy(strict))])
    assert not r.accepted and any(x.startswith("RANK_NOT_ALLOWED") for x in r.reasons)
    assert not (tmp_path / "d" / "legal").exists() and leftovers(tmp_path) == []


def test_ids_cannot_leave_the_root(world, server, tmp_path):
    outside = craft(tmp_path / "outside", "secret")
    (world["root"] / "link").symlink_to(outside, target_is_directory=True)
    try:
        assert "secret" not in {e.id for e in get_inventory(server.address)}
        stub = pb2_grpc.PlasmidExchangeStub(grpc.insecure_channel(server.address))
        for bad in ("../outside/secret", "a/b", "..", "", "/etc/passwd", "x" * 200, "legal\x00"):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Fetch(pb2.FetchRequest(id=bad), timeout=5))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Fetch(pb2.FetchRequest(id="secret"), timeout=5))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        (world["root"] / "link").unlink()


def test_a_skipped_folder_is_logged_once_not_per_request(tmp_path, caplog):
    root = tmp_path / "root"
    craft(root, "legal")
    (root / "linkdir").symlink_to(craft(tmp_path / "outside", "secret"), target_is_directory=True)
    srv = serve(root, port=0)
    try:
        with caplog.at_level("WARNING", logger="plora.grpc.server"):
            for _ in range(3):
                assert [e.id for e in get_inventory(srv.address)] == ["legal"]
        assert [r.getMessage() for r in caplog.records].count(
            f"not serving {root / 'linkdir'}: it resolves outside {root.resolve()}") == 1, caplog.text
    finally:
        srv.stop(0)


def test_generated_certificates_and_keys_are_git_ignored():
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():  # a copy without git (git archive): there is nothing to ignore for
        pytest.skip("not a git checkout")
    for path in ("certs/server.key", "keys/alice", "received/legal/plora.yml"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode == 0, path


def test_rescan_picks_up_new_plasmids_and_skips_hidden(world, server, tmp_path):
    craft(world["root"] / ".hidden", "ghost")
    before = {e.id for e in get_inventory(server.address)}
    craft(world["root"], "late", seed=9)
    after = {e.id for e in get_inventory(server.address)}
    assert after - before == {"late"} and "ghost" not in after
    shutil.rmtree(world["root"] / "late")
    shutil.rmtree(world["root"] / ".hidden")


def test_garbage_and_stalled_clients_do_not_hurt_the_server(world, tmp_path):
    limits = Limits(max_streams=1, stream_timeout_s=2.0, chunk_bytes=16 * 1024)
    big = craft(tmp_path / "root", "big", layers=1000)  # 8 MB: more than the socket and HTTP/2 windows hold
    srv = serve(big.parent, port=0, limits=limits)
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:  # not even HTTP/2
            s.sendall(os.urandom(4096))
        ch = grpc.insecure_channel(srv.address, options=[("grpc.http2.bdp_probe", 0)])  # windows stay small
        raw = ch.unary_stream("/plora.v1.PlasmidExchange/Fetch")  # bytes in, bytes out: a broken protobuf
        with pytest.raises(grpc.RpcError):
            list(raw(b"\xff\xff\xff\xff\x0f garbage", timeout=5))
        stalled = pb2_grpc.PlasmidExchangeStub(ch).Fetch(pb2.FetchRequest(id="big"), timeout=30)
        next(stalled)  # the header; then this client stops reading and holds the only stream slot
        with pytest.raises(TransferError, match="RESOURCE_EXHAUSTED"):
            fetch(srv.address, "big", tmp_path / "d1", limits=replace(limits, busy_wait_s=0))
        # past stream_timeout_s the server cancels the stalled stream and frees the slot: the client's busy retry
        # polls for it (the stalled stream is never cancelled by its own client)
        r = fetch(srv.address, "big", tmp_path / "d2", limits=replace(limits, busy_wait_s=20))
        assert r.accepted and r.size > 1_000_000
        stalled.cancel()
        ch.close()
    finally:
        srv.stop(0)


def test_bulk_tokens_are_single_use_and_expire(world, tmp_path):
    limits = Limits(max_streams=1, bulk_claim_s=1.5)
    srv = serve(world["root"], port=0, limits=limits)
    try:
        stub = pb2_grpc.PlasmidExchangeStub(grpc.insecure_channel(srv.address))
        stream = stub.Fetch(pb2.FetchRequest(id="legal", bulk=True), timeout=30)  # kept open: the token stays valid
        header = next(stream).header
        assert header.bulk_port and len(header.bulk_token) == 32
        for token in (os.urandom(32), b"short"):  # a guessed token, a truncated one: closed, nothing sent
            with socket.create_connection(("127.0.0.1", header.bulk_port), timeout=10) as s:
                s.sendall(token)
                s.shutdown(socket.SHUT_WR)
                assert s.recv(1) == b""
        with pytest.raises(TransferError, match="RESOURCE_EXHAUSTED"):  # the unused token holds the only slot
            fetch(srv.address, "legal", tmp_path / "d1", limits=replace(limits, busy_wait_s=0))
        # ... until it expires (its stream is still open): the client's busy retry polls for that
        assert fetch(srv.address, "legal", tmp_path / "d2", limits=replace(limits, busy_wait_s=20)).accepted
        with socket.create_connection(("127.0.0.1", header.bulk_port), timeout=10) as s:
            s.sendall(header.bulk_token)  # expired, and never valid twice
            assert s.recv(1) == b""
        stream.cancel()
    finally:
        srv.stop(0)


def test_fifty_concurrent_fetches_all_succeed(world, server, tmp_path):
    results: list[object] = [None] * 50

    def one(i: int) -> None:
        try:
            results[i] = fetch(server.address, "legal", tmp_path / f"d{i}", checks=[signature_check([world["keys"]])])
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            results[i] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(getattr(r, "accepted", False) for r in results), [r for r in results if not getattr(r, "accepted", 0)]
    assert leftovers(tmp_path) == []


def test_tls_and_mutual_tls(world, tmp_path):
    from plora.grpc.tls import ClientTLS, ServerTLS, make_test_pki

    pki = make_test_pki(tmp_path / "pki")
    srv = serve(world["root"], port=0, host="127.0.0.1",
                tls=ServerTLS(pki["server_cert"], pki["server_key"], client_ca=pki["ca_cert"]))
    try:
        mtls = ClientTLS(pki["ca_cert"], pki["client_cert"], pki["client_key"])
        assert fetch(f"localhost:{srv.port}", "legal", tmp_path / "d", tls=mtls).accepted
        for tls in (ClientTLS(pki["ca_cert"]), None):  # no client certificate; plaintext
            with pytest.raises(TransferError):
                fetch(f"localhost:{srv.port}", "legal", tmp_path / "e", tls=tls, limits=Limits(inventory_timeout_s=3))
        assert not (tmp_path / "e" / "legal").exists()
    finally:
        srv.stop(0)


def _offer_processes(root: Path, n: int) -> list[tuple[subprocess.Popen, int]]:
    procs = [subprocess.Popen([sys.executable, "-m", "plora", "offer", "--root", str(root), "--port", "0"],
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return [(p, int(p.stdout.readline().split(" on 127.0.0.1:")[1].split()[0])) for p in procs]


def _wait_for_stage(parent: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stage in parent.glob(f"{STAGE_PREFIX}*"):
            if any(stage.glob("*.safetensors")):  # the header has arrived and the artifact is being received
                return
        time.sleep(0.002)
    raise AssertionError("the transfer never started")


def test_killed_server_or_client_leaves_nothing_partial(tmp_path):
    big = craft(tmp_path / "root", "big", layers=5000)  # ~41 MB: long enough to be caught mid-transfer
    (proc, port), (other, other_port) = _offer_processes(big.parent, 2)
    dest = tmp_path / "work" / "dest"
    try:
        box: dict[str, object] = {}
        t = threading.Thread(target=lambda: box.update(r=_try_fetch(f"127.0.0.1:{port}", dest)))
        t.start()
        _wait_for_stage(dest)  # inside the destination: the final rename never crosses filesystems
        proc.send_signal(signal.SIGKILL)  # the server dies mid-transfer
        t.join(30)
        assert isinstance(box["r"], TransferError)
        assert leftovers(tmp_path) == [] and os.listdir(dest) == []
        client = subprocess.Popen([sys.executable, "-m", "plora", "fetch", "--from", f"127.0.0.1:{other_port}",
                                   "--id", "big", "--dest", str(dest), "--no-gate"])
        _wait_for_stage(dest)
        client.send_signal(signal.SIGKILL)  # the receiver dies mid-transfer: its hidden stage stays in dest
        client.wait()
        [stage] = leftovers(dest)
        assert (dest / stage / "plora.yml").exists() and os.listdir(dest) == [stage]
        with serve(dest, port=0) as srv:  # a stage is never offered, though it holds a plora.yml
            assert get_inventory(srv.address) == []
        r = fetch(f"127.0.0.1:{other_port}", "big", dest)  # the others carry on; the dead stage is swept
        assert r.accepted and os.listdir(dest) == ["big"] and leftovers(tmp_path) == []
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()


def test_fetch_killed_while_replacing_an_earlier_plasmid_keeps_one_whole(world, server, tmp_path):
    """SIGKILL right after the rename that moves the earlier ``dest/legal`` aside (or swaps the new one in): a
    complete plasmid is at ``dest/legal`` (before, the folder was missing, and the next fetch into ``dest`` swept the
    earlier plasmid away with the dead process's stage)."""
    from crash_helpers import plora_cli, run_killed_at_rename

    from plora.signer import Keyring, verify_plasmid

    dest = tmp_path / "dest"
    assert fetch(server.address, "legal", dest).accepted
    rc = run_killed_at_rename(plora_cli("fetch", "--from", server.address, "--id", "legal", "--dest", str(dest),
                                        "--no-gate"), "legal")
    assert rc == -signal.SIGKILL
    keys = Keyring.load([world["keys"]])
    assert verify_plasmid(dest / "legal", keys).ok
    assert fetch(server.address, "stranger", dest).accepted  # the next fetch sweeps the dead stage, nothing else
    assert verify_plasmid(dest / "legal", keys).ok
    assert sorted(os.listdir(dest)) == ["legal", "stranger"]


def test_a_sign_killed_in_a_fetched_plasmid_never_blocks_the_next_fetch(world, server, tmp_path):
    """`plora sign` SIGKILLed just before the rename of its new plora.sig.json leaves its temporary file in the
    folder; the next fetch of that id into the same --dest replaces the folder (before, it refused it as "not a
    plasmid folder (it also holds .plora.sig.json....tmp)" until the file was removed by hand)."""
    from crash_helpers import plora_cli, run_killed_at_rename

    dest = tmp_path / "dest"
    assert fetch(server.address, "legal", dest).accepted
    rc = run_killed_at_rename(plora_cli("sign", str(dest / "legal"), "--key", str(world["keys"] / "alice")),
                              "plora.sig.json", before=True)
    assert rc == -signal.SIGKILL
    [temp] = [p.name for p in (dest / "legal").iterdir() if p.name.endswith(".tmp")]
    assert temp.startswith(".plora.sig.json.")
    r = fetch(server.address, "legal", dest)
    assert r.accepted and sorted(os.listdir(dest / "legal")) == sorted(os.listdir(world["root"] / "legal"))
    (dest / "legal" / ".plora.sig.json.1-abc.tmp").write_text("")  # pid 1 lives: a write may be in progress
    with pytest.raises(TransferError, match="not a plasmid folder"):
        fetch(server.address, "legal", dest)


def _try_fetch(address: str, dest: Path) -> object:
    try:
        return fetch(address, "big", dest)
    except TransferError as err:
        return err


def test_stubs_in_the_tree_equal_a_fresh_generation(tmp_path):
    from plora.grpc import stubs

    stubs.generate(tmp_path)
    for name in ("plasmid_pb2.py", "plasmid_pb2.pyi", "plasmid_pb2_grpc.py"):
        assert (tmp_path / "plora" / "grpc" / name).read_bytes() == (stubs.HERE / name).read_bytes(), name
