"""The swarm's one verdict cache (plora.swarm.verdicts) and the one roles draw (plora.swarm.roles).

The gate runs for real (its cheap stages; probes off where a test is about the cache, not the detectors). Tests check
that the sim's pool and the networked agents share one record per (plasmid, policy), that the key moves with
everything that decides a verdict, that concurrent askers screen once, and that sim and net draw the same roles.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from plora.gate.policy import load_policy
from plora.swarm.agent import AgentConfig, build_checks
from plora.swarm.pool import PlasmidPool, PoolEntry
from plora.swarm.verdicts import (
    VerdictCache,
    VerdictRecord,
    gate_fingerprint,
    plasmid_key,
    policy_key,
    verdict_key,
)


def _home() -> Path:
    return Path(os.environ["PLORA_HOME"])


@pytest.fixture()
def pool_dir(tmp_path: Path, legal_plasmid: Path) -> Path:
    root = tmp_path / "pool"
    root.mkdir()
    shutil.copytree(legal_plasmid, root / "p1")
    (root / "labels.json").write_text(json.dumps({"p1": {"domain": "legal", "trojan": False}}))
    return root


def test_sim_pool_and_agent_share_one_record(pool_dir: Path, tmp_path: Path, monkeypatch) -> None:
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps({"probes": False, "allowed_ranks": [8]}))  # r=4 plasmid: rejected
    policy = load_policy(policy_file)
    pool = PlasmidPool.from_dir(pool_dir)
    [verdict] = pool.verdicts(policy)
    folder = pool_dir / "p1"
    path = _home() / "verdicts" / f"{verdict_key(policy, folder)}.json"
    record = VerdictRecord.model_validate_json(path.read_bytes())
    assert record.by == "swarm sim" and record.plasmid == "p1" and record.key == verdict_key(policy, folder)
    assert verdict.accepted is record.accepted is False and verdict.reasons == record.codes == ("RANK_NOT_ALLOWED",)

    import plora.gate

    def no_screen(*a, **k):
        raise AssertionError("screened again: the agent did not find the sim's verdict")

    monkeypatch.setattr(plora.gate, "screen", no_screen)
    [check] = build_checks(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "a0", policy_file=str(policy_file)))
    lines = check(folder)
    assert lines == record.lines() and lines[0].startswith("RANK_NOT_ALLOWED: ")
    assert isinstance(check, VerdictCache) and (check.hits, check.screens) == (1, 0)


def test_the_key_moves_with_everything_that_decides_a_verdict(legal_plasmid: Path, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    shutil.copytree(legal_plasmid, folder)
    key_file = tmp_path / "k.pub"
    key_file.write_bytes(b"one key")
    policy = load_policy(None, probes=False, trusted_keys=[str(key_file)])
    p0, k0, g0 = plasmid_key(folder), policy_key(policy), gate_fingerprint(policy, "d" * 64)
    assert (plasmid_key(folder), policy_key(policy)) == (p0, k0)  # stable

    artifact = folder / "adapter_model.safetensors"
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 1
    artifact.write_bytes(bytes(data))
    assert plasmid_key(folder) != p0  # the artifact's bytes, not the manifest's claim about them
    artifact.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 1]))
    assert plasmid_key(folder) == p0
    (folder / "extra.bin").write_bytes(b"")  # a pickle-format file: the gate refuses the folder
    assert plasmid_key(folder) != p0
    (folder / "extra.bin").unlink()

    assert policy_key(load_policy(None, probes=False, trusted_keys=[str(key_file)], allowed_ranks=[4])) != k0
    key_file.write_bytes(b"another key")  # same path, other bytes
    assert policy_key(policy) != k0
    key_file.write_bytes(b"one key")

    import plora.gate.probes as probes

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probes, "PROBE_VERSION", probes.PROBE_VERSION + 1)
        assert policy_key(policy) != k0 and gate_fingerprint(policy, "d" * 64) != g0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probes, "STATISTIC", "drop_max")
        assert gate_fingerprint(policy, "d" * 64) != g0
    with pytest.MonkeyPatch.context() as mp:  # stricter gate rules: verdicts made under the old ones are not reused
        from plora.gate import reasons

        mp.setattr(reasons, "RULES_VERSION", reasons.RULES_VERSION + 1)
        assert policy_key(policy) != k0
    assert gate_fingerprint(policy, "d" * 64) == g0 and gate_fingerprint(policy, "e" * 64) != g0

    # the acceptance point of the gate issue: a recalibration changes the key, so no old verdict survives it
    from plora.gate.calibration import Calibration, Thresholds, install_calibration, remove_installed, write_calibration

    def calibration(trigger: float) -> Path:
        cal = Calibration(base_model="plora-tiny", base_digest="d" * 64, probe_version=probes.PROBE_VERSION,
                          statistic=probes.STATISTIC, probe_seed=0, probe_config={},
                          weight_reference={"version": 3, "entries": {"r4|x": {"fro": [1.0, 0.1]}}},
                          created="2026-11-27",
                          thresholds=Thresholds(trigger=trigger, norm_z=1.0, clean_delta=1.0))
        return write_calibration(cal, tmp_path / f"cal-{trigger}.json")

    try:
        install_calibration(calibration(1.0))
        g1 = gate_fingerprint(policy, "d" * 64)
        assert g1 != g0
        install_calibration(calibration(2.0), force=True)  # recalibrated: another digest
        assert gate_fingerprint(policy, "d" * 64) not in (g0, g1)
    finally:
        remove_installed("d" * 64)
    assert gate_fingerprint(policy, "d" * 64) == g0
    assert policy_key(policy) == k0


def test_concurrent_askers_screen_once(legal_plasmid: Path, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    shutil.copytree(legal_plasmid, folder)
    policy = load_policy(None, probes=False)
    caches = [VerdictCache(policy, by=f"t{i}") for i in range(4)]  # four askers, each with its own cache object
    start = threading.Barrier(len(caches))
    got: list[VerdictRecord] = []

    def ask(cache: VerdictCache) -> None:
        start.wait()
        got.append(cache.verdict(folder))

    threads = [threading.Thread(target=ask, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 4 and len({r.model_dump_json() for r in got}) == 1
    assert sum(c.screens for c in caches) == 1 and sum(c.hits for c in caches) == 3


def test_a_record_of_another_schema_is_screened_again(legal_plasmid: Path, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    shutil.copytree(legal_plasmid, folder)
    cache = VerdictCache(load_policy(None, probes=False))
    path = cache.path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"plasmid": "p", "accepted": True, "reasons": []}))  # the old pool layout
    record = cache.verdict(folder)
    assert cache.screens == 1 and VerdictRecord.model_validate_json(path.read_bytes()) == record


def test_a_folder_that_changes_while_screened_leaves_no_verdict_for_its_old_bytes(
        legal_plasmid: Path, tmp_path: Path, monkeypatch) -> None:
    """`plora sign` lands while the gate screens an unsigned folder: the screen sees the signature and accepts. That
    verdict must not be stored under the key of the unsigned bytes; before, the same folder unsigned again (or any
    copy of those bytes) was found "accepted" in the cache without a screen."""
    import plora.gate
    from plora.signer import generate_keypair, sign_plasmid

    folder = tmp_path / "p"
    shutil.copytree(legal_plasmid, folder)
    (folder / "plora.sig.json").unlink(missing_ok=True)
    priv, pub = generate_keypair("ed25519", tmp_path / "keys" / "alice")
    policy = load_policy(None, probes=False, trusted_keys=[str(pub)])
    real = plora.gate.screen

    def signed_while_screened(f, *args, **kwargs):
        sign_plasmid(f, priv)
        return real(f, *args, **kwargs)

    monkeypatch.setattr(plora.gate, "screen", signed_while_screened)
    assert VerdictCache(policy).verdict(folder).accepted  # the bytes it screened were signed
    monkeypatch.setattr(plora.gate, "screen", real)
    (folder / "plora.sig.json").unlink()  # unsigned again: the bytes the first key was taken from
    again = VerdictCache(policy)
    record = again.verdict(folder)
    assert again.screens == 1 and not record.accepted and "SIGNATURE_MISSING" in record.codes


# ------------------------------------------------------------------------------------------------------------ roles
def _entries(clean: int, trojan: int, domains: tuple[str, ...]) -> list[PoolEntry]:
    out = []
    for d in domains:
        for i in range(clean + trojan):
            out.append(PoolEntry(f"{d}-{i}", d, i >= clean, f"{d}{i}".ljust(64, "0"), 1000, 100))
    return out


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("trojan_rate", [0.0, 0.3, 1.0])
def test_sim_and_net_draw_the_same_roles(seed: int, trojan_rate: float) -> None:
    from plora.swarm import make_config
    from plora.swarm.net import initial_plasmids
    from plora.swarm.sim import initial_state, pool_view, stream_seeds

    domains = ("arithmetic", "legal", "science")
    entries = _entries(2, 2, domains)
    cfg = make_config(agents=23, trojan_rate=trojan_rate, seed=seed, domains=domains)
    _, role_seed, _ = stream_seeds(seed)

    held, honest, trojan_agents = initial_state(cfg, pool_view(_Entries(entries), domains), role_seed)
    sim = {i: int(np.log2(int(h))) for i, h in enumerate(held) if int(h)}  # one plasmid per agent: its bit
    net_trojans, net_first = initial_plasmids(cfg.agents, entries, list(domains), trojan_rate, role_seed)

    assert set(np.flatnonzero(trojan_agents).tolist()) == net_trojans
    assert len(net_trojans) == round(trojan_rate * cfg.agents)
    assert sim == {i: entries.index(e) for i, e in net_first.items()}
    for i, j in sim.items():  # each agent starts with a plasmid of its domain and of its role
        assert entries[j].domain == domains[i % len(domains)] and entries[j].trojan == (i in net_trojans)


class _Entries:
    def __init__(self, entries: list[PoolEntry]) -> None:
        self.entries = entries
