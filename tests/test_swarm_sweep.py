"""`plora swarm sweep`: the grid, the gate model, rows and resume, phase diagrams, and the same rows on every backend.

The pool is the suite's trained clean and trojan legal plasmids (``--pool_dir``); runs use the gate model (verdicts
drawn from a TPR/FPR) and the real gate's verdicts on the real plasmids. The Ray test uses the suite's one local Ray
(``local_ray`` in fixtures_ray.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plora.errors import PloraError
from plora.executor import ExecutorConfig
from plora.swarm.config import SimConfig, make_config
from plora.swarm.gate_model import GateModel, rates_from_report
from plora.swarm.pool import PoolEntry
from plora.swarm.sweep import SweepConfig, make_sweep, plan_runs, read_rows, run_sweep


@pytest.fixture()
def pool_dir(legal_pool: Path) -> Path:
    return legal_pool


def small_grid(pool_dir: Path, out: Path) -> SweepConfig:
    return make_sweep(
        agents="300",
        graph_p="0.03",
        trojan_rate="0,0.2",
        gate_tpr="none,0.5,1",
        seeds="0,1",
        domains="legal",
        pool_dir=str(pool_dir),
        out=str(out),
        rounds=40,
    )


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timings"} for r in rows]


def by_key(rows: list[dict]) -> dict[str, dict]:
    return {r["key"]: r for r in without_timings(rows)}


def test_grid_varies_graph_parameters_only_with_their_graph() -> None:
    runs = plan_runs(
        SweepConfig(
            agents=(100,),
            graph=("er", "ws", "ba"),
            graph_p=(0.05, 0.1),
            ws_k=(4, 6),
            ws_beta=(0.1,),
            ba_m=(2,),
            trojan_rate=(0.1,),
            gate_tpr=(None, 0.9),
            gate_fpr=(0.0, 0.1),
            seeds=(3,),
        )
    )
    shapes = [(c.graph, c.graph_p, c.ws_k, c.gate_tpr, c.gate_fpr) for c in runs]
    assert len(shapes) == len(set(shapes)) == (2 + 2 + 1) * (1 + 2)  # graphs x (real gate + 2 model FPRs)
    assert {c.graph_p for c in runs if c.graph != "er"} == {0.25}  # the sim's default, not an axis
    with pytest.raises(PloraError, match=r"sweep run agents=4 .*--sources 2 x 4 domains needs more than 4 agents"):
        plan_runs(make_sweep(agents="4", sources="2", seeds="0"))
    with pytest.raises(PloraError, match="--gate_tpr: Input should be less than or equal to 1"):
        plan_runs(make_sweep(gate_tpr="1.5", seeds="0"))


def test_gate_model_rejects_exact_seeded_shares_and_reads_gate_eval(tmp_path: Path) -> None:
    template = [
        PoolEntry("a", "legal", False, "a" * 64, 50_000, 1_000),
        PoolEntry("b", "legal", True, "b" * 64, 60_000, 1_100),
    ]
    m = GateModel.from_template(template, tpr=0.75, fpr=0.25, per_label=8, seed=5)
    assert len({e.sha256 for e in m.entries}) == 16 and {e.artifact_bytes for e in m.entries} == {50_000, 60_000}
    assert sum(not ok for e, ok in zip(m.entries, m.accept, strict=True) if e.trojan) == 6
    assert sum(not ok for e, ok in zip(m.entries, m.accept, strict=True) if not e.trojan) == 2
    assert m.accept == GateModel.from_template(template, tpr=0.75, fpr=0.25, per_label=8, seed=5).accept
    with pytest.raises(PloraError, match="more than 64"):
        GateModel.from_template(template, tpr=0.5, fpr=0.0, per_label=33, seed=0)
    with pytest.raises(PloraError, match="give --gate_tpr too"):
        make_config(SimConfig, gate_fpr=0.1)
    with pytest.raises(PloraError, match="needs --security on"):
        make_config(SimConfig, gate_tpr=0.9, security="off")
    report = tmp_path / "gate_eval.json"
    report.write_text(json.dumps({"held_out": {"overall": {"tpr": 0.8, "fpr": 0.05}}}))
    assert rates_from_report(report) == (0.8, 0.05)
    report.write_text(json.dumps({"ordinary": {"overall": {"tpr": 0.7, "fpr": 0.1}}}))  # gate-eval before the split
    assert rates_from_report(report) == (0.7, 0.1)
    report.write_text(json.dumps({"development": {}}))
    with pytest.raises(PloraError, match="no held_out.overall.tpr/fpr"):
        rates_from_report(report)


def test_sweep_cli_writes_rows_resumes_and_draws_phase_diagrams(pool_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "plora",
        "swarm",
        "sweep",
        "--agents",
        "300",
        "--graph_p",
        "0.03",
        "--trojan_rate",
        "0,0.2",
        "--gate_tpr",
        "none,0.5,1",
        "--seeds",
        "0,1",
        "--domains",
        "legal",
        "--rounds",
        "40",
        "--pool_dir",
        str(pool_dir),
        "--out",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "12 runs in the grid have rows (12 ran now on inline, 0 reused)" in proc.stdout
    rows = read_rows(out / "sweep.jsonl")
    assert len(rows) == 12 and len({r["key"] for r in rows}) == 12
    for r in rows:  # the realised detection rate is what the gate (model or real) did to the plasmids in play
        tpr = r["config"].get("gate_tpr")
        if tpr is not None:
            assert r["gate"]["model"] and r["gate"]["detection_rate"] == tpr
        if r["config"]["trojan_rate"] == 0:
            assert r["final"]["trojan_prevalence"] == 0
        if tpr == 1:
            assert r["final"]["gate"]["accepted_trojan"] == 0 and r["final"]["trojan_prevalence"] == 0
        assert set(r["timings"]) >= {"total_s", "engine_s", "worker"}
    # one diagram for the real gate's runs, one for the gate model's
    assert [p.stat().st_size > 5_000 for p in sorted(out.glob("phase*.png"))] == [True, True]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["runs"] == 12 and summary["ran"] == 12 and summary["failed"] == []

    # an interrupted sweep: the last row torn, one row lost; the rerun redoes exactly those two runs
    lines = (out / "sweep.jsonl").read_text().splitlines()
    (out / "sweep.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:40])
    again = run_sweep(small_grid(pool_dir, out), progress=False)
    assert (again.ran, again.reused) == (2, 10)
    assert by_key(again.rows) == by_key(rows)  # the redone runs gave the same rows


def test_same_rows_inline_on_processes_and_on_ray(local_ray, pool_dir: Path, tmp_path: Path) -> None:
    outcomes = {}
    for name, executor in (
        ("inline", ExecutorConfig()),
        ("processes", ExecutorConfig(jobs=2)),
        ("ray", ExecutorConfig(ray_address="auto")),
    ):
        outcomes[name] = run_sweep(small_grid(pool_dir, tmp_path / name), executor, progress=False)
        assert outcomes[name].ran == 12 and not outcomes[name].failures
    assert without_timings(outcomes["processes"].rows) == without_timings(outcomes["inline"].rows)
    assert without_timings(outcomes["ray"].rows) == without_timings(outcomes["inline"].rows)
    workers = {r["timings"]["worker"] for r in outcomes["ray"].rows}
    assert os.getpid() not in {int(w.split(":")[1]) for w in workers}  # the runs ran in Ray's worker processes
    assert json.loads(outcomes["ray"].summary_path.read_text())["executor"]["backend"] == "ray"
