"""Summarise a folder of swarm reports (in-process sim and networked swarm share the schema).

    >>> from plora.swarm import SimConfig, run_simulation
    >>> from plora.swarm.summary import summarise_reports, write_summary, format_table
    >>> for seed in (0, 1):
    ...     _ = run_simulation(SimConfig(agents=6, seed=seed, domains=("legal", "medical"), pool_dir="mypool",
    ...                                  trojan_rate=0.0, security=False), progress=False)
    >>> s = summarise_reports("results")
    >>> len(s["runs"])
    2
    >>> write_summary(s, "results/summary_v2.json")
    PosixPath('results/summary_v2.json')
    >>> print(format_table(s))
    engine  agents  seed  security  rounds_run  coverage_mean ...
    sim-v2       6     0     False ...

Every ``*.json`` under the folder (recursively) whose ``meta.schema`` is the swarm report schema is read; other JSON
files (another summary, gate-eval output) are skipped and listed under ``skipped``; the summary's own output file
is not read at all. A row per run; aggregates per
(engine, security) group: runs, mean final coverage, summed gate counts, and from them the trojan detection rate
``rejected_trojan / (rejected_trojan + accepted_trojan)`` and the clean rejection (false-positive) rate
``rejected_clean / (rejected_clean + accepted_clean)``, null when there was nothing to count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from plora.errors import PloraError
from plora.fsio import atomic_write_json
from plora.swarm.report import SCHEMA, load_report

_GATE = ("accepted_clean", "accepted_trojan", "rejected_clean", "rejected_trojan")


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def _row(path: Path, root: Path) -> dict[str, Any]:
    r = load_report(path)
    m, f = r.meta, r.final
    cov = list(f.coverage.values())
    reach = [v for v in f.coverage_reachable.values() if v is not None]
    full = list(f.rounds_to_full_coverage.values())
    g = f.gate
    return {
        "file": str(path.relative_to(root)),
        "engine": m.engine,
        "agents": m.agents,
        "trojan_agents": m.trojan_agents,
        "seed": m.seed,
        "graph": m.graph.kind,
        "mean_degree": m.graph.mean_degree,
        "security": bool(m.flags.get("security", m.policy is not None)),
        "rounds_run": f.rounds_run,
        "coverage_mean": round(sum(cov) / len(cov), 6) if cov else None,
        "coverage_reachable_min": min(reach) if reach else None,
        "rounds_to_full_max": None if (not full or any(x is None for x in full)) else max(full),
        "predicted_rounds": (f.theory or {}).get("mean_field_rounds"),
        "trojan_prevalence": f.trojan_prevalence,
        "bytes_on_wire": f.bytes_on_wire,
        "accepted_offers": f.accepted_offers,
        **{k: getattr(g, k) for k in _GATE},
        "false_negatives": g.false_negatives,
        "false_positives": g.false_positives,
        "detection_rate": _rate(g.rejected_trojan, g.rejected_trojan + g.accepted_trojan),
        "false_positive_rate": _rate(g.rejected_clean, g.rejected_clean + g.accepted_clean),
        **_recall_columns(f.recall),
    }


def _recall_columns(recall: dict[str, Any] | None) -> dict[str, Any]:
    """A run's recall outcome (``--revoke_at``, peer scoring): None where it had none."""
    recall = recall or {}
    scoring = recall.get("peer_scoring") or {}
    return {
        "revoke_at": recall.get("revoke_at"),
        "time_to_purge": recall.get("time_to_purge"),
        "spread_rounds": recall.get("spread_rounds"),
        "peak_prevalence": recall.get("peak_prevalence"),
        "exposure": recall.get("exposure"),
        "peer_scoring": scoring.get("enabled"),
    }


def summarise_reports(folder: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
                      ) -> dict[str, Any]:
    """Rows and aggregates for every report under ``folder``; PloraError when there is none. ``exclude``: a file
    not read at all (the summary's own output, which a rerun finds in the folder)."""
    root = Path(folder)
    if not root.is_dir():
        raise PloraError(f"--reports {root}: no such folder")
    own = Path(exclude).resolve() if exclude is not None else None
    rows, skipped = [], []
    for path in sorted(root.rglob("*.json")):
        if own is not None and path.resolve() == own:
            continue
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
            is_report = isinstance(head, dict) and isinstance(head.get("meta"), dict)
            if not is_report or head["meta"].get("schema") != SCHEMA:
                skipped.append(str(path.relative_to(root)))
                continue
            rows.append(_row(path, root))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, PloraError) as err:
            skipped.append(f"{path.relative_to(root)} ({str(err).splitlines()[0][:120]})")
    if not rows:
        raise PloraError(f"no swarm reports (meta.schema {SCHEMA}) under {root}")
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["engine"], row["security"]), []).append(row)
    aggregates = []
    for (engine, security), members in sorted(groups.items()):
        sums = {k: sum(m[k] for m in members) for k in _GATE}
        covs = [m["coverage_mean"] for m in members if m["coverage_mean"] is not None]
        aggregates.append({
            "engine": engine,
            "security": security,
            "runs": len(members),
            "agents_total": sum(m["agents"] for m in members),
            "coverage_mean": round(sum(covs) / len(covs), 6) if covs else None,
            "bytes_on_wire_mean": round(sum(m["bytes_on_wire"] for m in members) / len(members), 1),
            **sums,
            "detection_rate": _rate(sums["rejected_trojan"], sums["rejected_trojan"] + sums["accepted_trojan"]),
            "false_positive_rate": _rate(sums["rejected_clean"], sums["rejected_clean"] + sums["accepted_clean"]),
        })
    return {"reports": str(root), "runs": rows, "aggregates": aggregates, "skipped": skipped}


def write_summary(summary: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    return atomic_write_json(out, summary)


def format_table(summary: dict[str, Any]) -> str:
    """A fixed-width table: one line per run, then one per (engine, security) group."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cols = ("engine", "agents", "seed", "security", "rounds_run", "coverage_mean", "rounds_to_full_max",
            "trojan_prevalence", "false_negatives", "false_positives", "bytes_on_wire")
    def table(columns: tuple[str, ...], items: list[dict[str, Any]]) -> list[str]:
        cells = [[fmt(it[c]) for c in columns] for it in items]
        width = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        out = ["  ".join(c.rjust(w) for c, w in zip(columns, width, strict=True))]
        return out + ["  ".join(v.rjust(w) for v, w in zip(row, width, strict=True)) for row in cells]

    lines = table(cols, summary["runs"])
    lines.append("")
    agg_cols = (
        "engine",
        "security",
        "runs",
        "coverage_mean",
        "detection_rate",
        "false_positive_rate",
        "bytes_on_wire_mean",
    )
    lines += table(agg_cols, summary["aggregates"])
    if summary["skipped"]:
        lines.append(f"skipped {len(summary['skipped'])} non-report JSON file(s)")
    return "\n".join(lines)
