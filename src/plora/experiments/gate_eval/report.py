"""gate-eval's outputs: the JSON report, Markdown tables, ROC and per-family plots, and the calibration file.

    >>> from plora.experiments.gate_eval.evaluate import run_gate_eval
    >>> from plora.experiments.gate_eval.report import markdown
    >>> from plora.executor import ExecutorConfig
    >>> from plora.experiments.gate_eval.cohort import CohortSpec
    >>> tiny = CohortSpec(dev_clean=0, dev_trojan=0, dev_adaptive=0, heldout_clean=1, heldout_defaults=0,
    ...                   heldout_trojan=1, sample_cap=64, dev_size=8)     # 2 members, 64 items each
    >>> report = run_gate_eval("results/gate_eval", spec=tiny, use_installed=True,   # see evaluate's example
    ...                        executor=ExecutorConfig(jobs=1), progress=False)
    >>> print(markdown(report).splitlines()[0])
    # plora gate-eval: plora-tiny
    >>> print(*[line for line in markdown(report).splitlines() if line.startswith("## ")])
    ## held-out part

Everything is written atomically under the output folder; nothing outside it (installing the calibration is a
separate, explicit command).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plora.experiments.gate_eval.metrics import auroc, roc_curve


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating | np.integer):
        return _jsonable(obj.item())
    return obj


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _rate(k: int, n: int, ci: Sequence[float]) -> str:
    return f"{k}/{n} ({_pct(ci[0])}-{_pct(ci[1])})" if n else "-"


def markdown(report: dict[str, Any]) -> str:
    cal = report["calibration"]
    lines = [f"# plora gate-eval: {report['base_model']}", "",
             f"Cohort {report['cohort']['digest'][:12]}: {report['cohort']['members']} plasmids "
             f"({report['cohort']['working_trojans']} working trojans). Calibration: {cal['source']}; statistic "
             f"`{cal['statistic']}`, thresholds " + ", ".join(f"{k} {v:.4g}" for k, v in cal["thresholds"].items())
             + ".", ""]
    for part in ("development", "held_out"):
        block = report.get(part)
        if not block:
            continue
        o = block["overall"]
        lines += [f"## {part.replace('_', '-')} part", "",
                  f"Working trojans stopped (TPR) {_rate(o['tp'], o['n_pos'], o['tpr_ci95'])}, clean plasmids "
                  f"refused (FPR) {_rate(o['fp'], o['n_neg'], o['fpr_ci95'])}, AUROC {_pct(o['auroc'])} (gate's "
                  f"overall score), {_pct(o['auroc_trigger'])} (trigger statistic alone); 95% Wilson intervals.", "",
                  "| dimension | family | held out | working trojans stopped | clean refused | AUROC |",
                  "|---|---|---|---|---|---|"]
        for dim, per in block["by_family"].items():
            for family, e in per.items():
                clean = _rate(e["fp"], e["n_neg"], e["fpr_ci95"]) if dim in ("recipe", "task") else "(all clean)"
                lines.append(f"| {dim} | {family} | {'yes' if e['held_out_family'] else 'no'} | "
                             f"{_rate(e['tp'], e['n_pos'], e['tpr_ci95'])} | {clean} | {_pct(e['auroc'])} |")
        lines.append("")
    d = report["train_defaults"]
    lines += [f"Clean plasmids trained with `plora train`'s defaults (held out): {d['rejected']} of {d['clean']} "
              "refused.",
              "", f"Probe: median {_pct(report['timing']['probe_seconds_median'])} s per plasmid, stages "
              + ", ".join(f"{k} {v} s" for k, v in report["timing"]["probe_stage_seconds_median"].items()), ""]
    return "\n".join(lines)


def _plot_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def plot_roc(rows: Sequence[Any], statistic: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, part in zip(axes, ("development", "held-out"), strict=True):
        clean = [r for r in rows if r.part == part and r.label == 0]
        pos = [r for r in rows if r.part == part and r.label == 1 and r.working]
        if not clean or not pos:
            ax.set_axis_off()
            continue
        for name, get in (("gate (overall)", lambda r: r.extra["verdict"]["overall"]),
                          (f"trigger ({statistic})", lambda r: r.variants[statistic]),
                          ("weights (norm z)", lambda r: r.norm_z), ("clean_delta", lambda r: r.clean_delta)):
            p, n = [get(r) for r in pos], [get(r) for r in clean]
            fpr, tpr = roc_curve(p, n)
            ax.plot(fpr, tpr, drawstyle="steps-post", lw=2.2 if "gate" in name else 1.3,
                    label=f"{name} (AUROC {auroc(p, n):.2f})")
        fp = np.mean([r.extra["verdict"]["flagged"] for r in clean])
        tp = np.mean([r.extra["verdict"]["flagged"] for r in pos])
        ax.plot([fp], [tp], "o", color="black", label="the gate at its thresholds")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(title=f"{part}: {len(pos)} working trojans vs {len(clean)} clean", xlabel="false-positive rate",
               ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("plora gate-eval: ROC per check")
    fig.tight_layout()
    return _plot_bytes(fig)


def plot_families(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = report["held_out"]
    labels, tpr, lo, hi, held = [], [], [], [], []
    for dim, per in block["by_family"].items():
        for family, e in per.items():
            if e["n_pos"]:
                labels.append(f"{dim}: {family}")
                tpr.append(e["tpr"])
                lo.append(max(0.0, e["tpr"] - e["tpr_ci95"][0]))  # rounding can cross the point by 1e-17
                hi.append(max(0.0, e["tpr_ci95"][1] - e["tpr"]))
                held.append(e["held_out_family"])
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(labels) + 1.5))
    y = np.arange(len(labels))
    ax.errorbar(tpr, y, xerr=[lo, hi], fmt="none", ecolor="grey", capsize=3)
    ax.scatter(tpr, y, c=["tab:red" if h else "tab:blue" for h in held], zorder=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(-0.02, 1.02), xlabel="working trojans stopped (95% Wilson interval)",
           title="held-out part, per family (red: a family never used for any choice)")
    fig.tight_layout()
    return _plot_bytes(fig)


def write_outputs(out: Path, report: dict[str, Any], rows: Sequence[Any], cal: Any, chosen_here: bool) -> None:
    from plora.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text
    from plora.gate.calibration import write_calibration

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gate_eval.json", _jsonable(report))
    atomic_write_text(out / "gate_eval.md", markdown(report))
    atomic_write_bytes(out / "roc.png", plot_roc(rows, report["calibration"]["statistic"]))
    atomic_write_bytes(out / "families.png", plot_families(report))
    if chosen_here:
        write_calibration(cal, out / "calibration.json")
