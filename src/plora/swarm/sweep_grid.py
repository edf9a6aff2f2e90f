"""The grid of `plora swarm sweep`: :class:`SweepConfig` (every list an axis) and the runs it plans, one per cell.

    >>> from plora.swarm.sweep_grid import SweepConfig, plan_runs, run_key
    >>> runs = plan_runs(SweepConfig(agents=(500,), graph=("er", "ba"), trojan_rate=(0.1, 0.2), seeds=(1,)))
    >>> [(cfg.graph, cfg.trojan_rate) for cfg in runs]
    [('er', 0.1), ('er', 0.2), ('ba', 0.1), ('ba', 0.2)]
    >>> len(run_key(runs[0]))                       # a hash of the run's flags: the row's key in sweep.jsonl
    16

Each field of :class:`SweepConfig` that takes a list is one axis of the grid; every combination is one run of
:func:`plora.swarm.sim.run_simulation` (a :class:`plora.swarm.config.SimConfig`). Graph parameters only vary with
their own graph kind (``graph_p`` for er, ``ws_k`` x ``ws_beta`` for ws, ``ba_m`` for ba). ``gate_tpr`` switches a run
to the gate model (:mod:`plora.swarm.gate_model`: verdicts drawn from a TPR/FPR over many distinct plasmids);
``none`` in that list keeps the real gate's verdicts on the real pool; ``--gate_report`` reads one measured TPR/FPR
from a ``plora gate-eval`` report instead. Running the planned runs and writing their rows is :mod:`plora.swarm.sweep`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plora.errors import PloraError
from plora.swarm.config import DEFAULT_DOMAINS, SimConfig, on_off


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
    rounds: int = Field(default=100, ge=1, description="maximum rounds per run")
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
