"""THE swarm report schema, shared by the in-process simulation and the networked swarm, and its writer.

    >>> from plora.swarm import SimConfig, run_simulation
    >>> from plora.swarm.report import build_report, load_report, write_report
    >>> cfg = SimConfig(agents=6, domains=("legal", "medical"), pool_dir="mypool", trojan_rate=0.0, security=False)
    >>> r = run_simulation(cfg, progress=False)
    >>> report = build_report(r["meta"], r["rounds"], r["final"])   # validates, returns a plain dict
    >>> path = write_report(report, "elsewhere")                     # JSON + coverage PNG, atomically
    >>> path.name, path.with_suffix(".png").exists()
    ('sim-v2-n6-seed0-....json', True)
    >>> load_report(path).final.coverage == report["final"]["coverage"]
    True

One JSON file per run, ``<engine>-n<agents>-seed<seed>-<hash8>.json`` (the hash covers ``meta.flags``, so the same
command overwrites its own report and nothing else), and ``<same stem>.png`` beside it: coverage per domain over
rounds, trojan prevalence dashed. Everything in a report is a pure function of the flags and the seed except
``meta.timings`` (wall-clock seconds; the networked swarm may also put its addresses/ports there).

Top level: ``meta``, ``rounds``, ``final`` (see the models below; field descriptions are the documentation).
``final.gate`` counts transfers by outcome and by ground truth: a trojan accepted is a false negative, a clean
plasmid rejected a false positive; ``rejection_reasons`` counts, per stable reason code of the gate, the rejected
transfers whose verdict carried it. ``final.bytes_on_wire`` is the sum of ``final.bytes_breakdown``: inventories
(16-byte header + 32 bytes per SHA-256 listed, both directions of every contact), manifests (plora.yml +
adapter_config.json) and artifacts (adapter_model.safetensors) of every plasmid actually transferred.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plora.errors import PloraError, first_validation_error
from plora.fsio import atomic_write_bytes, atomic_write_text

SCHEMA = "plora.swarm.report/1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GraphStats(_Model):
    kind: str = Field(description="er | ws | ba | complete | custom")
    params: dict[str, Any] = Field(default_factory=dict, description="generator parameters (p, k, beta, m)")
    n: int = Field(ge=0, description="agents")
    edges: int = Field(ge=0)
    mean_degree: float = Field(ge=0)
    max_degree: int = Field(default=0, ge=0)
    isolated: int = Field(default=0, ge=0, description="agents with no neighbour: never reachable")
    components: int = Field(default=1, ge=0)
    largest_component: int = Field(default=0, ge=0)
    spectral_gap: float | None = Field(default=None, description="1 - lambda_2 of D^-1/2 A D^-1/2 (largest comp.)")
    reachable: dict[str, int] = Field(
        default_factory=dict, description="per domain: honest agents in a component holding a clean source"
    )


class Meta(_Model):
    schema_: str = Field(default=SCHEMA, alias="schema", description="schema id; readers check it")
    engine: str = Field(description="sim-v2 (in-process) or net (real agent processes)")
    seed: int
    flags: dict[str, Any] = Field(description="every flag of the command, as parsed")
    agents: int = Field(ge=0)
    honest_agents: int = Field(ge=0)
    trojan_agents: int = Field(ge=0)
    domains: list[str]
    graph: GraphStats
    pool: list[dict[str, Any]] = Field(
        default_factory=list, description="plasmids in play: id, domain, label (ground truth), sha256, bytes"
    )
    policy: dict[str, Any] | None = Field(default=None, description="effective gate policy; None with security off")
    timings: dict[str, Any] = Field(default_factory=dict, description="wall-clock only: excluded from determinism")
    extra: dict[str, Any] = Field(default_factory=dict, description="engine-specific details")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RoundRecall(_Model):
    """Per round, with a revocation (``--revoke_at``) or peer scoring in play; shares are of honest agents."""

    trojan_holders: int = Field(ge=0, description="honest agents holding any trojan")
    holding: float | None = Field(default=None, ge=0, le=1, description="share holding a revoked (target) plasmid")
    injecting: float | None = Field(default=None, ge=0, le=1, description="share injecting it: one of their domain")
    revocation: float | None = Field(default=None, ge=0, le=1, description="share holding every revocation issued")
    holders: int | None = Field(default=None, ge=0)
    injectors: int | None = Field(default=None, ge=0)
    informed: int | None = Field(default=None, ge=0)
    holders_reachable: int | None = Field(
        default=None, ge=0, description="holders the revocation can reach (purge is complete at 0)"
    )
    purged: int = Field(default=0, ge=0, description="(agent, plasmid) pairs removed by a revocation this round")
    graylisted: int = Field(default=0, ge=0, description="contact sides skipped: the receiver graylisted the sender")
    revocation_bytes: int = Field(default=0, ge=0, description="signed revocation envelopes transferred")


class RoundStats(_Model):
    round: int = Field(ge=0, description="0 is the initial state")
    coverage: dict[str, float] = Field(description="per domain: share of honest agents holding a clean plasmid")
    coverage_reachable: dict[str, float | None] = Field(
        default_factory=dict, description="per domain: the same share among honest agents a source can reach"
    )
    trojan_prevalence: float = Field(ge=0, le=1, description="share of honest agents holding a trojan")
    contacts: int = Field(default=0, ge=0)
    offers: int = Field(ge=0, description="plasmids transferred (each then screened by the receiver's gate)")
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    bytes: int = Field(ge=0)
    recall: RoundRecall | None = None


class GateTotals(_Model):
    accepted_clean: int = Field(ge=0)
    accepted_trojan: int = Field(ge=0)
    rejected_clean: int = Field(ge=0)
    rejected_trojan: int = Field(ge=0)
    false_negatives: int = Field(ge=0, description="trojans accepted")
    false_positives: int = Field(ge=0, description="clean plasmids rejected")
    rejection_reasons: dict[str, int] = Field(default_factory=dict)


class Final(_Model):
    bytes_on_wire: int = Field(ge=0)
    bytes_breakdown: dict[str, int] = Field(default_factory=dict, description="inventory, manifest, artifact")
    accepted_offers: int = Field(ge=0)
    offers: int = Field(ge=0)
    coverage: dict[str, float]
    coverage_reachable: dict[str, float | None] = Field(default_factory=dict)
    rounds_to_full_coverage: dict[str, int | None] = Field(
        description="per domain: first round at which every reachable honest agent held it; null if never"
    )
    rounds_run: int = Field(ge=0)
    quiescent: bool = Field(description="true when the run stopped because nothing could change any more")
    trojan_prevalence: float = Field(ge=0, le=1)
    gate: GateTotals
    theory: dict[str, Any] | None = Field(default=None, description="predicted rounds beside the observed ones")
    recall: dict[str, Any] | None = Field(
        default=None, description="revocation and peer-scoring outcome (plora.swarm.revoke.recall_final)"
    )


class Report(_Model):
    meta: Meta
    rounds: list[RoundStats]
    final: Final


def build_report(meta: dict[str, Any], rounds: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """Validate the three parts against the schema and return the report as a plain JSON-ready dict."""
    try:
        report = Report.model_validate({"meta": meta, "rounds": rounds, "final": final})
    except ValidationError as err:
        raise PloraError(f"report does not fit the schema: {first_validation_error(err)}") from None
    if report.final.gate.false_negatives != report.final.gate.accepted_trojan:
        raise PloraError("report: gate.false_negatives must equal gate.accepted_trojan")
    if report.final.gate.false_positives != report.final.gate.rejected_clean:
        raise PloraError("report: gate.false_positives must equal gate.rejected_clean")
    return report.model_dump(mode="json", by_alias=True)


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read and validate one report; PloraError when the file is not a swarm report."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PloraError(f"{path}: not readable JSON ({type(err).__name__})") from None
    if not isinstance(data, dict) or data.get("meta", {}).get("schema") != SCHEMA:
        raise PloraError(f"{path}: not a swarm report (meta.schema != {SCHEMA})")
    try:
        return Report.model_validate(data)
    except ValidationError as err:
        raise PloraError(f"{path}: {first_validation_error(err)}") from None


def report_stem(report: dict[str, Any]) -> str:
    meta = report["meta"]
    digest = hashlib.sha256(json.dumps(meta["flags"], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{meta['engine']}-n{meta['agents']}-seed{meta['seed']}-{digest}"


def write_report(report: dict[str, Any], report_dir: str | os.PathLike[str], stem: str | None = None) -> Path:
    """Write ``<stem>.json`` and ``<stem>.png`` into ``report_dir`` atomically (default stem: :func:`report_stem`)."""
    folder = Path(report_dir)
    stem = stem or report_stem(report)
    png = folder / f"{stem}.png"
    atomic_write_bytes(png, coverage_png(report))
    if (report["final"].get("recall") or {}).get("revoke_at") is not None:
        atomic_write_bytes(folder / f"{stem}-recall.png", recall_png(report))
    return atomic_write_text(folder / f"{stem}.json", json.dumps(report, indent=2) + "\n")


def coverage_png(report: dict[str, Any]) -> bytes:
    """Coverage per domain (solid) and trojan prevalence (dashed) over rounds, as PNG bytes."""
    # the object API with the Agg canvas: no pyplot, no global figure state, no backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rounds = report["rounds"]
    xs = [r["round"] for r in rounds]
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in report["meta"]["domains"]:
        ax.plot(xs, [r["coverage"].get(name, 0.0) for r in rounds], marker=".", label=f"{name} (clean)")
    ax.plot(xs, [r["trojan_prevalence"] for r in rounds], "k--", label="trojan prevalence")
    meta = report["meta"]
    ax.set_title(f"{meta['engine']}: {meta['agents']:,} agents, {meta['graph']['kind']}, seed {meta['seed']}")
    ax.set_xlabel("round")
    ax.set_ylabel("share of honest agents")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def recall_png(report: dict[str, Any]) -> bytes:
    """The two competing epidemics: the share of honest agents holding (solid) and injecting (dotted) the revoked
    trojan, and the share holding its revocation, observed (lines) beside the mean-field prediction (dashed);
    with ``--compare_peer_scoring`` the other arm's holding share too (thin)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recall = report["final"]["recall"]
    rows = [r for r in report["rounds"] if r.get("recall")]
    xs = [r["round"] for r in rows]
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, [r["recall"]["holding"] for r in rows], color="tab:red", label="holding the trojan")
    ax.plot(xs, [r["recall"]["injecting"] for r in rows], ":", color="tab:red", label="injecting it (own domain)")
    ax.plot(xs, [r["recall"]["revocation"] for r in rows], color="tab:blue", label="holding the revocation")
    curves = (recall.get("theory") or {}).get("curves") or {}
    if curves:
        ts = range(len(curves["holding"]))
        ax.plot(ts, curves["holding"], "--", color="tab:red", alpha=0.6, label="holding, mean field")
        ax.plot(ts, curves["revocation"], "--", color="tab:blue", alpha=0.6, label="revocation, mean field")
    for name, arm in (recall.get("arms") or {}).items():
        if arm.get("holding") and arm["holding"] != [r["recall"]["holding"] for r in rows]:
            ax.plot(range(len(arm["holding"])), arm["holding"], color="gray", lw=0.8,
                    label=f"holding, {name.replace('_', ' ')}")
    ax.axvline(recall["revoke_at"], color="k", lw=0.8, alpha=0.5)
    meta = report["meta"]
    purge = recall.get("time_to_purge")
    ax.set_title(f"{meta['engine']}: {meta['agents']:,} agents, revoked at round {recall['revoke_at']}, "
                 f"purged in {purge if purge is not None else '-'} rounds", fontsize=9)
    ax.set_xlim(0, max(xs, default=1))
    ax.set_xlabel("round")
    ax.set_ylabel("share of honest agents")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
