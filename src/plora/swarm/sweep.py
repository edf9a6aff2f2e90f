"""`plora swarm sweep`: a grid of Swarm Sim v2 runs through the executor seam, one JSONL row per run, phase diagrams.

    >>> from plora.executor import ExecutorConfig
    >>> from plora.swarm.sweep import SweepConfig, plan_runs, run_sweep
    >>> sweep = SweepConfig(agents=(1000,), graph_p=(0.01,), trojan_rate=(0.1, 0.3), gate_tpr=(0.5, 0.9), seeds=(1, 2))
    >>> len(plan_runs(sweep))                       # 2 trojan rates x 2 detection rates x 2 seeds
    8
    >>> small = SweepConfig(agents=(300,), graph_p=(0.03,), trojan_rate=(0.0,), gate_tpr=(1.0,), gate_fpr=(0.0, 0.5),
    ...                     seeds=(1, 2), domains=("legal", "medical"), pool_dir="mypool", out="results/sweep")
    >>> outcome = run_sweep(small, ExecutorConfig(jobs=2), progress=False)  # 4 runs in 2 worker processes
    >>> outcome.ran, [r["gate"]["false_positive_rate"] for r in outcome.rows]
    (4, [0.0, 0.0, 0.5, 0.5])
    >>> str(outcome.rows_path), [str(p) for p in outcome.phase_pngs]
    ('results/sweep/sweep.jsonl', ['results/sweep/phase.png'])

The grid (:class:`SweepConfig`, :func:`plan_runs`, :func:`run_key`) is :mod:`plora.swarm.sweep_grid`: each field
that takes a list is one axis, every combination one run of :func:`plora.swarm.sim.run_simulation`. This module runs
the planned runs through :mod:`plora.executor` and writes what they give.

Outputs in ``out`` (added to, never emptied):

- ``sweep.jsonl``: one row per finished run, appended (and fsynced) as it finishes: ``key`` (hash of the run's flags),
  ``config`` (the run's flags), ``graph``, ``agents``, ``gate`` (realised detection and false-positive rates over the
  plasmids in play), ``final`` (the report's final block) and ``timings`` (wall clock and worker: the only part that
  differs between two runs of the same flags, on any backend). A rerun skips the runs whose rows are there;
  a torn last line (an interrupted run) is dropped and that run redone;
- ``sweep.json``: the sweep's settings, backend, counts, failed runs and wall time;
- ``phase.png`` (``phase-1.png``, ... when other axes vary too): final trojan prevalence and rounds to full coverage
  over trojan rate x realised detection rate, each cell the mean over seeds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plora.executor import ExecutorConfig
from plora.swarm.config import SimConfig
from plora.swarm.sweep_grid import SweepConfig, make_sweep, plan_runs, run_key

__all__ = [
    "ROWS",
    "SUMMARY",
    "SweepConfig",
    "SweepOutcome",
    "make_sweep",
    "plan_runs",
    "prepare_pool",
    "read_rows",
    "run_key",
    "run_one",
    "run_sweep",
]

ROWS = "sweep.jsonl"
SUMMARY = "sweep.json"


# ------------------------------------------------------------------------------------------- one run (a task)
def run_one(task: tuple[dict[str, Any], Any]) -> dict[str, Any]:
    """One sweep run (an executor task): the sim with the given pool, no files written; returns its JSONL row."""
    from plora.swarm.sim import run_simulation

    flags, provider = task
    cfg = SimConfig(**flags)
    report = run_simulation(cfg, provider, write=False)
    meta, final = report["meta"], report["final"]
    pool = meta["pool"]
    trojans = [p for p in pool if p["label"] == "trojan"]
    clean = [p for p in pool if p["label"] == "clean"]

    def refused(group: list[dict[str, Any]]) -> float | None:
        return round(sum(not p["verdict"]["accepted"] for p in group) / len(group), 6) if group else None

    g = meta["graph"]
    timings = {k: v for k, v in meta["timings"].items() if k != "seconds_per_round"}
    timings["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return {
        "key": run_key(cfg),
        "config": {k: v for k, v in cfg.flags().items() if k != "report_dir"},
        "graph": {
            k: g.get(k)
            for k in (
                "kind",
                "n",
                "edges",
                "mean_degree",
                "components",
                "largest_component",
                "isolated",
                "spectral_gap",
            )
        },
        "agents": {"honest": meta["honest_agents"], "trojan": meta["trojan_agents"]},
        "gate": {
            "model": cfg.gate_tpr is not None,
            "detection_rate": refused(trojans),
            "false_positive_rate": refused(clean),
            "plasmids": len(pool),
        },
        "final": final,
        "timings": timings,
    }


# ---------------------------------------------------------------------------------------------- the driver
@dataclass
class SweepOutcome:
    rows: list[dict[str, Any]]  # this grid's rows (reused and new), in plan order
    rows_path: Path
    summary_path: Path
    phase_pngs: list[Path]
    failures: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    reused: int = 0
    wall_s: float = 0.0


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every complete row of a sweep.jsonl (a torn or foreign line is skipped: its run is simply redone); where a
    key appears twice (a rerun with resume off), the later row is the one that counts."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "key" in row and "final" in row:
            rows.append(row)
    return rows


class _RowWriter:
    """Appends one row per finished run, fsynced, so a crash loses at most the run in progress."""

    def __init__(self, path: Path, keep: list[dict[str, Any]]) -> None:
        from plora.fsio import atomic_write_text

        # start from the complete rows only (drops a torn last line), then append
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row, sort_keys=True) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def prepare_pool(sweep: SweepConfig, runs: list[SimConfig], executor: ExecutorConfig, progress: bool) -> Any:
    """The pool every run uses (trained through the executor on a cold cache), with the real gate's verdicts
    computed here once per distinct policy, so the runs only read them from the cache."""
    from plora.swarm.pool import PlasmidPool, PoolSpec
    from plora.swarm.sim import gate_setup
    from plora.swarm.verdicts import policy_key

    if sweep.pool_dir:
        pool = PlasmidPool.from_dir(sweep.pool_dir)
    else:
        pool = PlasmidPool.build(PoolSpec(domains=sweep.domains), progress=progress, executor=executor)
    seen: set[str] = set()
    for cfg in runs:
        if cfg.gate_tpr is not None or not cfg.security:
            continue
        provider, policy = gate_setup(cfg, pool)
        key = policy_key(policy)
        if key not in seen:
            seen.add(key)
            if progress:
                print(
                    f"sweep: the real gate's verdicts on {len(provider.entries)} plasmids under policy {key[:8]} "
                    "(screened once, then read from the cache)",
                    file=sys.stderr,
                    flush=True,
                )
            provider.verdicts(policy)
    return pool


def run_sweep(sweep: SweepConfig, executor: ExecutorConfig | None = None, progress: bool = True) -> SweepOutcome:
    """Run (or resume) every run of the grid through the executor, writing rows as they finish; then the summary
    and the phase diagrams. Failed runs (twice) are listed in the outcome and sweep.json, never dropped."""
    from plora.executor import backend_of, ray_address_in_force, run_tasks
    from plora.fsio import atomic_write_json
    from plora.outputs import check_report_dir
    from plora.swarm.sim import check_inputs

    executor = executor or ExecutorConfig()
    t0 = time.perf_counter()
    out = check_report_dir(sweep.out, flag="--out")
    runs = plan_runs(sweep)
    check_inputs(sweep.policy_file, () if sweep.pool_dir else sweep.domains, runs[0] if runs else None)
    if backend_of(executor) == "ray":
        from plora.executor import connect_ray

        connect_ray(executor)  # before the pool: a wrong address must not cost a pool build
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / ROWS
    existing = read_rows(rows_path)
    done = {r["key"]: r for r in existing} if sweep.resume else {}
    todo = [cfg for cfg in runs if run_key(cfg) not in done]
    pool = prepare_pool(sweep, todo, executor, progress) if todo else None
    writer = _RowWriter(rows_path, existing)  # resume off reruns and appends: the last row of a key counts
    failures: list[dict[str, Any]] = []
    try:

        def finished(i: int, row: dict[str, Any]) -> None:
            done[row["key"]] = row
            writer.add(row)

        def failed(i: int, failure: Any) -> None:
            failures.append({"key": run_key(todo[i]), "config": todo[i].flags(), "error": failure.error})
            if progress:
                print(f"sweep: run {run_key(todo[i])} failed twice: {failure.error}", file=sys.stderr, flush=True)

        t_runs = time.perf_counter()
        run_tasks(
            run_one,
            [(cfg.model_dump(), pool) for cfg in todo],
            executor,
            on_result=finished,
            on_failure=failed,
            label="swarm sweep runs",
            progress=progress,
        )
        runs_s = time.perf_counter() - t_runs
    finally:
        writer.close()
    rows = [done[run_key(cfg)] for cfg in runs if run_key(cfg) in done]
    from plora.swarm.phase import write_phase_diagrams

    pngs = write_phase_diagrams(rows, out)
    wall = time.perf_counter() - t0
    atomic_write_json(
        out / SUMMARY,
        {
            "sweep": sweep.model_dump(mode="json"),
            "executor": {
                "backend": backend_of(executor),
                "jobs": executor.jobs,
                "ray_address": ray_address_in_force(executor),
            },
            "runs": len(runs),
            "ran": len(todo) - len(failures),
            "reused": len(runs) - len(todo),
            "failed": failures,
            "rows": str(rows_path),
            "phase_pngs": [str(p) for p in pngs],
            "timings": {
                "wall_s": round(wall, 3),
                "runs_s": round(runs_s, 3),
                "run_seconds_sum": round(sum(r["timings"].get("total_s", 0.0) for r in rows), 3),
            },
        },
    )
    return SweepOutcome(
        rows,
        rows_path,
        out / SUMMARY,
        pngs,
        failures,
        ran=len(todo) - len(failures),
        reused=len(runs) - len(todo),
        wall_s=wall,
    )
