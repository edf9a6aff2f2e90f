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

Each field of :class:`SweepConfig` that takes a list is one axis of the grid; every combination is one run of
:func:`plora.swarm.sim.run_simulation` (a :class:`plora.swarm.config.SimConfig`). Graph parameters only vary with
their own graph kind (``graph_p`` for er, ``ws_k`` x ``ws_beta`` for ws, ``ba_m`` for ba). ``gate_tpr`` switches a run
to the gate model (:mod:`plora.swarm.gate_model`: verdicts drawn from a TPR/FPR over many distinct plasmids);
``none`` in that list keeps the real gate's verdicts on the real pool; ``--gate_report`` reads one measured TPR/FPR
from a ``plora gate-eval`` report instead.

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

import hashlib
import itertools
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plora.errors import PloraError
from plora.executor import ExecutorConfig
from plora.swarm.config import DEFAULT_DOMAINS, SimConfig, on_off

ROWS = "sweep.jsonl"
SUMMARY = "sweep.json"


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, int | float):
        return (value,)
    return value


def _none_or(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in {"none", "-"} else value


class SweepConfig(BaseModel):
    """Every list is an axis of the grid (comma-separated on the command line; ``none`` where the sim's flag is
    optional means "not given")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: tuple[int, ...] = Field(default=(10_000,), min_length=1, description="agents per run")
    graph: tuple[Literal["er", "ws", "ba"], ...] = Field(default=("er",), min_length=1, description="overlays")
    graph_p: tuple[float, ...] = Field(default=(0.001,), min_length=1, description="er: edge probabilities")
    ws_k: tuple[int, ...] = Field(default=(4,), min_length=1, description="ws: ring degrees (even)")
    ws_beta: tuple[float, ...] = Field(default=(0.1,), min_length=1, description="ws: rewiring probabilities")
    ba_m: tuple[int, ...] = Field(default=(2,), min_length=1, description="ba: edges per arriving agent")
    trojan_rate: tuple[float, ...] = Field(
        default=(0.0, 0.1, 0.2, 0.3), min_length=1, description="shares of agents that start with a trojan"
    )
    sources: tuple[int | None, ...] = Field(
        default=(None,), min_length=1, description="honest sources per domain (none: every honest agent is one)"
    )
    max_fetch_per_contact: tuple[int | None, ...] = Field(
        default=(None,), min_length=1, description="plasmids fetched per contact (none: no cap)"
    )
    tau_trigger: tuple[float | None, ...] = Field(
        default=(None,), min_length=1, description="real gate: trigger thresholds (none: the policy's)"
    )
    tau_norm_z: tuple[float | None, ...] = Field(
        default=(None,), min_length=1, description="real gate: weight-norm z thresholds (none: the policy's)"
    )
    tau_clean_delta: tuple[float | None, ...] = Field(
        default=(None,), min_length=1, description="real gate: clean-delta thresholds (none: the policy's)"
    )
    gate_tpr: tuple[float | None, ...] = Field(
        default=(None,), min_length=1, description="gate model: detection rates (none: the real gate's verdicts)"
    )
    gate_fpr: tuple[float, ...] = Field(default=(0.0,), min_length=1, description="gate model: false-positive rates")
    gate_report: str | None = Field(
        default=None,
        description="gate model: TPR and FPR measured by plora gate-eval (its gate_eval.json, "
        "held-out part) instead of --gate_tpr/--gate_fpr",
    )
    gate_plasmids: int | None = Field(
        default=None, ge=1, description="gate model: plasmids per domain and label (default: as many as fit)"
    )
    seeds: tuple[Annotated[int, Field(ge=0)], ...] = Field(default=(0, 1), min_length=1, description="run seeds")
    rounds: int = Field(default=100, ge=0, description="maximum rounds per run")
    domains: tuple[str, ...] = Field(default=DEFAULT_DOMAINS, min_length=1, description="plasmid domains")
    security: bool = Field(default=True, description="on: every receiver screens with the gate (real or model)")
    policy_file: str | None = Field(default=None, description="gate policy JSON (real gate)")
    pool_dir: str | None = Field(default=None, description="plasmids to use instead of the cached pool (labels.json)")
    out: str = Field(default="results/sweep", description="folder for sweep.jsonl, sweep.json and the phase PNGs")
    resume: bool = Field(default=True, description="on: skip runs whose rows are already in sweep.jsonl")

    @field_validator(
        "agents",
        "graph",
        "graph_p",
        "ws_k",
        "ws_beta",
        "ba_m",
        "trojan_rate",
        "sources",
        "max_fetch_per_contact",
        "tau_trigger",
        "tau_norm_z",
        "tau_clean_delta",
        "gate_tpr",
        "gate_fpr",
        "seeds",
        "domains",
        mode="before",
    )
    @classmethod
    def _list(cls, v: Any) -> Any:
        v = _csv(v)
        return tuple(_none_or(x) for x in v) if isinstance(v, tuple | list) else v

    @field_validator("security", "resume", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        return on_off(v)

    @model_validator(mode="after")
    def _one_gate_source(self) -> SweepConfig:
        if self.gate_report and self.gate_tpr != (None,):
            raise ValueError("give --gate_report or --gate_tpr, not both")
        return self


def make_sweep(**fields: Any) -> SweepConfig:
    """SweepConfig from keyword flags; a bad value becomes a one-line PloraError naming the flag."""
    from plora.swarm.config import make_config

    return make_config(SweepConfig, **fields)


def _graph_axes(sweep: SweepConfig) -> list[dict[str, Any]]:
    base = {k: SimConfig.model_fields[k].default for k in ("graph_p", "ws_k", "ws_beta", "ba_m")}
    out: list[dict[str, Any]] = []
    for kind in dict.fromkeys(sweep.graph):
        if kind == "er":
            out += [{**base, "graph": kind, "graph_p": p} for p in sweep.graph_p]
        elif kind == "ws":
            out += [{**base, "graph": kind, "ws_k": k, "ws_beta": b} for k in sweep.ws_k for b in sweep.ws_beta]
        else:
            out += [{**base, "graph": kind, "ba_m": m} for m in sweep.ba_m]
    return out


def _gate_axes(sweep: SweepConfig) -> list[dict[str, Any]]:
    if sweep.gate_report:
        from plora.swarm.gate_model import rates_from_report

        measured_tpr, measured_fpr = rates_from_report(sweep.gate_report)
        return [{"gate_tpr": measured_tpr, "gate_fpr": measured_fpr, "gate_plasmids": sweep.gate_plasmids}]
    out: list[dict[str, Any]] = []
    for tpr in dict.fromkeys(sweep.gate_tpr):
        if tpr is None:
            out.append({})
        else:
            out += [
                {"gate_tpr": tpr, "gate_fpr": f, "gate_plasmids": sweep.gate_plasmids}
                for f in dict.fromkeys(sweep.gate_fpr)
            ]
    return out


def plan_runs(sweep: SweepConfig) -> list[SimConfig]:
    """Every run of the grid, in a fixed order; each validated (a bad combination names the run and the flag)."""
    from plora.swarm.config import make_config

    fixed = {
        "rounds": sweep.rounds,
        "domains": sweep.domains,
        "security": sweep.security,
        "policy_file": sweep.policy_file,
        "pool_dir": sweep.pool_dir,
    }
    runs: list[SimConfig] = []
    seen: set[str] = set()
    for n, g, tr, src, mf, tt, tn, tc, gate, seed in itertools.product(
        dict.fromkeys(sweep.agents),
        _graph_axes(sweep),
        dict.fromkeys(sweep.trojan_rate),
        dict.fromkeys(sweep.sources),
        dict.fromkeys(sweep.max_fetch_per_contact),
        dict.fromkeys(sweep.tau_trigger),
        dict.fromkeys(sweep.tau_norm_z),
        dict.fromkeys(sweep.tau_clean_delta),
        _gate_axes(sweep),
        dict.fromkeys(sweep.seeds),
    ):
        fields = {
            **fixed,
            **g,
            **gate,
            "agents": n,
            "trojan_rate": tr,
            "sources": src,
            "max_fetch_per_contact": mf,
            "tau_trigger": tt,
            "tau_norm_z": tn,
            "tau_clean_delta": tc,
            "seed": seed,
        }
        try:
            cfg = make_config(SimConfig, **{k: v for k, v in fields.items() if v is not None})
        except PloraError as err:
            raise PloraError(f"sweep run {_describe(fields)}: {err}") from None
        key = run_key(cfg)
        if key not in seen:
            seen.add(key)
            runs.append(cfg)
    return runs


def _describe(fields: dict[str, Any]) -> str:
    shown = ("agents", "graph", "trojan_rate", "sources", "gate_tpr", "seed")
    return " ".join(f"{k}={fields[k]}" for k in shown if fields.get(k) is not None)


def run_key(cfg: SimConfig) -> str:
    flags = {k: v for k, v in cfg.flags().items() if k != "report_dir"}
    return hashlib.sha256(json.dumps(flags, sort_keys=True).encode()).hexdigest()[:16]


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
    check_inputs(sweep.policy_file, () if sweep.pool_dir else sweep.domains)
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
