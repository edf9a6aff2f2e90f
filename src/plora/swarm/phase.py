"""Phase diagrams of a swarm sweep: final trojan prevalence and rounds to full coverage over trojan rate x detection.

    >>> from pathlib import Path
    >>> from plora.swarm.phase import phase_groups, write_phase_diagrams
    >>> from plora.swarm.sweep import SweepConfig, run_sweep
    >>> sweep = SweepConfig(agents=(300,), graph_p=(0.03,), trojan_rate=(0.0,), gate_tpr=(1.0,), gate_fpr=(0.0, 0.5),
    ...                     seeds=(1,), domains=("legal", "medical"), pool_dir="mypool", out="results/sweep")
    >>> rows = run_sweep(sweep, progress=False).rows  # 2 runs, in this process
    >>> [(differs, len(group)) for differs, group in phase_groups(rows)]  # one group: only the gate's FPR varies
    [({}, 2)]
    >>> [p.name for p in write_phase_diagrams(rows, Path("results/sweep"))]
    ['phase.png']

Rows are grouped by every flag except the seed, the trojan rate and the gate's knobs (``gate_tpr``, ``gate_fpr``,
the ``tau_*`` thresholds), and by real gate vs gate model: one PNG per group (``phase.png`` for a single group, else
``phase-1.png``, ...; a group of one cell gets none). In a group, x is the trojan rate, y the REALISED detection rate
(share of the pool's trojans that the gate rejects: the gate model's drawn rate, or the real gate's under the run's
thresholds), with the realised false-positive rate beside it where that varies, and each cell is the mean over the
runs that share it (the seeds). Rounds to full coverage is the last domain's round; a run that never reached full
coverage is left out of that mean and counted in the cell's label.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

# what the axes show (trojan rate; the gate's realised rates) or average over (seed): never a group of its own
AXES = ("seed", "trojan_rate", "gate_tpr", "gate_fpr", "tau_trigger", "tau_norm_z", "tau_clean_delta")


def phase_groups(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """[(the flags a group shares and other groups do not, its rows)], in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        shared = {k: v for k, v in row["config"].items() if k not in AXES}
        key = json.dumps({**shared, "gate model": row["gate"]["model"]}, sort_keys=True)
        groups.setdefault(key, []).append(row)
    keys = [json.loads(k) for k in groups]
    varying = {k for s in keys for k in s if len({json.dumps(t.get(k)) for t in keys}) > 1}
    return [({k: v for k, v in s.items() if k in varying}, rs) for s, rs in zip(keys, groups.values(), strict=True)]


def _full_round(row: dict[str, Any]) -> int | None:
    rounds = list(row["final"]["rounds_to_full_coverage"].values())
    return None if not rounds or None in rounds else max(rounds)


def _gate_rates(row: dict[str, Any]) -> tuple[float, float]:
    gate = row["gate"]
    return round(gate["detection_rate"] or 0.0, 4), round(gate["false_positive_rate"] or 0.0, 4)


def _grid(
    rows: list[dict[str, Any]],
) -> tuple[list[float], list[tuple[float, float]], np.ndarray, np.ndarray, np.ndarray]:
    xs = sorted({r["config"]["trojan_rate"] for r in rows})
    ys = sorted({_gate_rates(r) for r in rows})
    prev = np.full((len(ys), len(xs)), np.nan)
    full = np.full((len(ys), len(xs)), np.nan)
    never = np.zeros((len(ys), len(xs)), dtype=int)
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((ys.index(_gate_rates(r)), xs.index(r["config"]["trojan_rate"])), []).append(r)
    for (y, x), rs in cells.items():
        prev[y, x] = float(np.mean([r["final"]["trojan_prevalence"] for r in rs]))
        reached = [f for r in rs if (f := _full_round(r)) is not None]
        full[y, x] = float(np.mean(reached)) if reached else np.nan
        never[y, x] = len(rs) - len(reached)
    return xs, ys, prev, full, never


def plot_phase(rows: list[dict[str, Any]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys, prev, full, never = _grid(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(ys) + 3.2))
    panels = (
        (prev, "final trojan prevalence (honest agents)", "magma_r", (0.0, 1.0)),
        (full, "rounds to full coverage (all domains)", "viridis", (None, None)),
    )
    for ax, (data, label, cmap, (lo, hi)) in zip(axes, panels, strict=True):
        im = ax.imshow(data, origin="lower", aspect="auto", cmap=cmap, vmin=lo, vmax=hi)
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        with_fpr = any(fpr for _, fpr in ys)  # the false-positive rate joins the label only where it varies
        ax.set_yticks(range(len(ys)), [f"{d:g}" + (f" (FPR {f:g})" if with_fpr else "") for d, f in ys])
        ax.set(
            xlabel="trojan rate (share of agents starting with a trojan)",
            ylabel="detection rate (trojans the gate rejects)",
            title=label,
        )
        fig.colorbar(im, ax=ax, shrink=0.85)
        for (y, x), v in np.ndenumerate(data):
            text = "-" if np.isnan(v) else (f"{v:.2f}" if data is prev else f"{v:.1f}")
            if data is full and never[y, x]:
                text += f"\n{never[y, x]} never"
            ax.text(
                x,
                y,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if not np.isnan(v) and data is prev and v > 0.5 else "black",
            )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_phase_diagrams(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per group of rows (see the module), written atomically; [] without rows."""
    from plora.fsio import atomic_write_bytes

    groups = [
        (d, rs)
        for d, rs in phase_groups(rows)  # one cell is no diagram
        if len({r["config"]["trojan_rate"] for r in rs}) > 1 or len({_gate_rates(r) for r in rs}) > 1
    ]
    paths = []
    for i, (differs, rs) in enumerate(groups, start=1):
        first = rs[0]
        seeds = sorted({r["config"]["seed"] for r in rs})
        c = first["config"]
        gate = (
            f"gate model (FPR {c['gate_fpr']:g}, {first['gate']['plasmids']} plasmids)"
            if first["gate"]["model"]
            else "the real gate's verdicts"
            if c["security"]
            else "no gate"
        )
        title = (
            f"swarm sweep: {c['agents']:,} agents, {first['graph']['kind']} overlay, {gate}, "
            f"{len(rs)} runs, seeds {','.join(map(str, seeds))}"
        )
        own = {"er": {"graph_p"}, "ws": {"ws_k", "ws_beta"}, "ba": {"ba_m"}}[c["graph"]]
        others = {"graph_p", "ws_k", "ws_beta", "ba_m"} - own  # parameters of the other overlays: not this one's
        shown = {k: v for k, v in differs.items() if k not in {"gate_plasmids", "agents", "graph"} | others}
        if shown:
            title += "\n" + ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
        path = out / ("phase.png" if len(groups) == 1 else f"phase-{i}.png")
        atomic_write_bytes(path, plot_phase(rs, title))
        paths.append(path)
    return paths
