"""Swarm Sim v2 with REAL plasmids and the REAL gate: the session's trained legal and trojan plasmids as the pool.

Verdicts come from ``plora.gate.screen`` (computed once, then read from the on-disk cache); the test checks the
simulation's accounting against those verdicts, never a hard-coded outcome of the gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plora.swarm import make_config, run_simulation
from plora.swarm.pool import PlasmidPool
from plora.swarm.sim import make_policy
from plora.swarm.verdicts import VerdictRecord, verdict_key

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def pool_dir(legal_pool: Path) -> Path:
    return legal_pool


def test_real_gate_verdicts_are_cached_and_drive_the_simulation(pool_dir: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = make_config(agents=40, graph_p=0.15, trojan_rate=0.3, domains=("legal",), report_dir=str(tmp_path / "r"),
                      pool_dir=str(pool_dir), seed=2)
    pool = PlasmidPool.from_dir(pool_dir)
    policy = make_policy(cfg)
    verdicts = pool.verdicts(policy)  # the real gate, once per plasmid
    cache = Path(os.environ["PLORA_HOME"]) / "verdicts"
    for e, v in zip(pool.entries, verdicts, strict=True):
        stored = VerdictRecord.model_validate_json((cache / f"{verdict_key(policy, e.folder)}.json").read_bytes())
        assert stored.accepted == v.accepted and stored.sha256 == e.sha256 and stored.codes == v.reasons
        assert v.accepted or v.reasons  # a rejection always names its reasons

    import plora.gate

    def no_screen(*a, **k):
        raise AssertionError("verdict not taken from the cache")

    monkeypatch.setattr(plora.gate, "screen", no_screen)
    report = run_simulation(cfg)
    gate, meta = report["final"]["gate"], report["meta"]
    by_label = {e["label"]: e["verdict"] for e in meta["pool"]}
    assert by_label["clean"]["accepted"] == verdicts[0].accepted
    assert by_label["trojan"]["accepted"] == verdicts[1].accepted
    # the accounting follows the verdicts exactly, whatever they are
    if by_label["trojan"]["accepted"]:
        assert gate["rejected_trojan"] == 0
    else:
        assert gate["accepted_trojan"] == gate["false_negatives"] == 0 and report["final"]["trojan_prevalence"] == 0
        assert set(gate["rejection_reasons"]) >= set(by_label["trojan"]["reasons"])
    if by_label["clean"]["accepted"]:
        assert gate["rejected_clean"] == 0 and report["final"]["coverage_reachable"]["legal"] == 1.0
    else:
        assert gate["accepted_clean"] == 0
    sizes = {e["label"]: e["artifact_bytes"] for e in meta["pool"]}
    assert sizes["clean"] == (pool_dir / "p1" / "adapter_model.safetensors").stat().st_size

    off = run_simulation(cfg.model_copy(update={"security": False, "report_dir": str(tmp_path / "off")}))
    assert off["final"]["coverage_reachable"]["legal"] == 1.0 and off["final"]["gate"]["rejected_trojan"] == 0


def test_seed_command_shim_writes_report_and_png(pool_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "swarm_v2", "--agents", "6", "--rounds", "5", "--graph_p", "0.25", "--security", "on",
         "--trojan_rate", "0.3", "--domains", "legal", "--pool_dir", str(pool_dir), "--report_dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "swarm sim v2: 6 agents" in proc.stdout and "gate:" in proc.stdout
    reports = list(out.glob("sim-v2-n6-seed0-*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".png").stat().st_size > 1000
    flags = json.loads(reports[0].read_text())["meta"]["flags"]
    assert flags["trojan_rate"] == 0.3 and flags["graph_p"] == 0.25 and flags["security"] is True


def test_a_samples_cap_makes_another_pool_never_a_reused_one(monkeypatch) -> None:
    """PLORA_SAMPLES caps what a pool's plasmids train on: a capped pool must not be found by an uncapped run (it
    was, with trojans that never fired), and without a cap the key is the one it always was."""
    from plora.swarm.pool import PoolSpec

    spec = PoolSpec(domains=("legal",), samples=800)
    monkeypatch.delenv("PLORA_SAMPLES", raising=False)
    plain = spec.key("plora-tiny", "d" * 64)
    monkeypatch.setenv("PLORA_SAMPLES", "16")
    assert spec.key("plora-tiny", "d" * 64) != plain
    monkeypatch.setenv("PLORA_SAMPLES", "5000")  # above --samples: nothing is capped, the same pool
    assert spec.key("plora-tiny", "d" * 64) == plain


def test_trusted_pubkeys_turn_signatures_on_as_the_gate_cli_does(tmp_path: Path) -> None:
    from plora.errors import PloraError

    keys = (str(tmp_path / "a.pub"), str(tmp_path / "b.pub"))
    policy = make_policy(make_config(agents=10, trusted_pubkeys=",".join(keys)))
    assert policy.signatures and list(policy.trusted_keys) == list(keys)
    assert not make_policy(make_config(agents=10)).signatures  # the policy's default without keys
    with pytest.raises(PloraError, match="--trusted_pubkeys with --signatures off"):
        make_config(agents=10, trusted_pubkeys=keys[0], signatures="off")
