"""Markdown tables and the forest plot of the value-add experiment.

    >>> from plora.experiments.report import summary_table
    >>> summary_table([])[0].split(" | ")[:4]    # the summary the README quotes: one row per domain and question
    ['| domain', 'question', 'items/cell', 'NLL base / trained / A / B']

``write_markdown(path, records, cfg, violations)`` and ``write_forest_plot(path, records)`` write
``value_add.md`` and ``value_add_forest.png`` from the records ``run_value_add`` makes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from plora.experiments.stats import significant
from plora.fsio import atomic_write_bytes, atomic_write_text

QUESTION_TITLES = {
    "knowledge": "knowledge carried (the plasmid's training facts, asked in the wording held out from training)",
    "skill": "skill (dev facts, never trained in any wording)",
}
ARM_LABELS = {"base": "base", "trained": "trained", "placebo_a": "placebo A", "placebo_b": "placebo B"}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "–" if x is None else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _diff(stats: dict[str, Any], name: str, metric: str, ci: bool = True) -> str:
    s = stats.get(name, {}).get(metric)
    if not s:
        return "–"
    interval = f" [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]" if ci else ""
    return f"{s['mean_diff']:+.3f}{interval} p={_p(s.get('p_holm'))}"


def _arms(m: dict[str, Any], key: str, arms: tuple[str, ...], digits: int = 2) -> str:
    return " / ".join(_fmt(m.get(a, {}).get(key), digits) for a in arms)


def _cell_table(records: list[dict[str, Any]], question: str) -> list[str]:
    four = ("base", "trained", "placebo_a", "placebo_b")
    head = (
        "| rank | scheme | seed | n | NLL base / trained / A / B | calibrated NLL base / trained / A / B "
        "| EM base / trained / B | Δ cal. vs base [95% CI] Holm p | Δ cal. vs placebo A | Δ cal. vs placebo B "
        "| Δ raw vs placebo B | T base / trained / A / B |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in records:
        c, q, t = r["config"], r["questions"][question], r.get("temperatures", {})
        m, s = q["metrics"], q["statistics"]
        em = _arms(m, "exact_match", ("base", "trained", "placebo_b")) if "exact_match" in m["base"] else "–"
        cells = [
            str(c["rank"]),
            c["scheme"],
            str(c["seed"]),
            str(q["n"]),
            _arms(m, "nll", four),
            _arms(m, "nll_calibrated", four),
            em,
            _diff(s, "trained_vs_base", "nll_calibrated"),
            _diff(s, "trained_vs_placebo_a", "nll_calibrated", ci=False),
            _diff(s, "trained_vs_placebo_b", "nll_calibrated"),
            _diff(s, "trained_vs_placebo_b", "nll", ci=False),
            " / ".join(_fmt(t.get(a), 2) for a in four),
        ]
        if q.get("meets_acceptance"):
            cells = [f"**{x}**" for x in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(records: list[dict[str, Any]], question: str, alpha: float) -> str:
    n = len(records)
    beats = {
        name: sum(
            1
            for r in records
            if all(
                significant(r["questions"][question]["statistics"].get(name, {}).get(m), alpha)
                for m in ("nll", "nll_calibrated")
            )
        )
        for name in ("trained_vs_base", "trained_vs_placebo_a", "trained_vs_placebo_b")
    }
    k = sum(1 for r in records if r["questions"][question].get("meets_acceptance"))
    return (
        f"The trained plasmid beats the base in {beats['trained_vs_base']}/{n} cells, placebo A in "
        f"{beats['trained_vs_placebo_a']}/{n}, placebo B in {beats['trained_vs_placebo_b']}/{n}, all three in "
        f"**{k}/{n}** (answer NLL raw and calibrated, Holm p < {alpha:g}, CI excluding 0)."
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _avg(questions: list[dict[str, Any]], key: str, arm: str) -> float | None:
    values = [q["metrics"].get(arm, {}).get(key) for q in questions]
    return _mean([v for v in values if v is not None])


def summary_table(records: list[dict[str, Any]]) -> list[str]:
    """One row per (domain, question): means over the domain's cells (the table the README quotes)."""
    cells = [r for r in records if r["kind"] == "cell"]
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in cells:
        by_domain[r["config"]["domain"]].append(r)
    lines = [
        "| domain | question | items/cell | NLL base / trained / A / B | calibrated NLL base / trained / A / B "
        "| EM base / trained / B | Δ cal. vs placebo B (min..max) | cells meeting all three |",
        "|" + "---|" * 8,
    ]
    four = ("base", "trained", "placebo_a", "placebo_b")
    for domain, recs in by_domain.items():
        for question in ("knowledge", "skill"):
            qs = [r["questions"][question] for r in recs]
            nll = " / ".join(_fmt(_avg(qs, "nll", a), 2) for a in four)
            cal = " / ".join(_fmt(_avg(qs, "nll_calibrated", a), 2) for a in four)
            em = "–"
            if "exact_match" in qs[0]["metrics"]["base"]:
                em = " / ".join(_fmt(_avg(qs, "exact_match", a), 2) for a in ("base", "trained", "placebo_b"))
            diffs = [
                q["statistics"]["trained_vs_placebo_b"]["nll_calibrated"]["mean_diff"] for q in qs if q["statistics"]
            ]
            spread = f"{min(diffs):+.2f}..{max(diffs):+.2f}" if diffs else "–"
            met = sum(1 for q in qs if q.get("meets_acceptance"))
            items = sorted({q["n"] for q in qs})
            n = str(items[0]) if len(items) == 1 else f"{items[0]}-{items[-1]}"
            lines.append(f"| {domain} | {question} | {n} | {nll} | {cal} | {em} | {spread} | {met}/{len(qs)} |")
    return lines


def write_markdown(
    path: str | os.PathLike[str], records: list[dict[str, Any]], cfg: Any, violations: list[str]
) -> Path:
    cells = [r for r in records if r["kind"] == "cell"]
    mono = [r for r in records if r["kind"] == "monolithic"]
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in cells:
        by_domain[r["config"]["domain"]].append(r)
    c0 = cells[0]["config"] if cells else {}
    lines = [
        "# Value-add experiment",
        "",
        f"Base model `{c0.get('base_model', '?')}`; {c0.get('samples', cfg.samples)} training items per plasmid, "
        f"{c0.get('epochs', 0):g} epoch(s) at learning rate {c0.get('learning_rate', 0):g}; "
        f"{len(cells)} cells. Two questions per cell: **knowledge carried** (the plasmid's own training facts, asked "
        "in the wording held out from its training) and **skill** (dev facts, never trained in any wording). Arms: "
        "the base, the trained plasmid, placebo A (random LoRA with the trained plasmid's per-module norms) and "
        "placebo B (same training, answers shuffled among questions of the same kind).",
        "",
        "NLL is the mean answer-token negative log-likelihood (nats/token, lower is better), raw and *calibrated*: "
        "each arm's logits divided by its own temperature T, fitted on calibration items that no question uses, so "
        "what remains of a gain is information, not confidence. Δ is the paired per-item improvement (reference − "
        "candidate, positive = the trained plasmid is better) with its paired-bootstrap 95% CI and the "
        "Holm-corrected Wilcoxon signed-rank p over every test of the run (raw NLL, calibrated NLL and exact match, "
        "both questions). **Bold** rows meet the acceptance criteria: better than the base and both placebos on raw "
        f"AND calibrated NLL, Holm p < {cfg.alpha:g}, CI excluding 0.",
        "",
        "Guardrails (the run exits 2 if one fails): placebo A must not lower the calibrated NLL by more than 0.05 "
        "nats/token, and placebo B must not raise exact match by more than 0.02, each judged with "
        f"Holm p < {cfg.alpha:g} and a CI above 0, on either question. Placebo A's raw-NLL effect is reported, not "
        "judged (flattening an over-confident base lowers raw NLL); placebo B lowering NLL is expected (it learns the "
        "answer format), so 'Δ vs placebo B' is the value beyond format.",
        "",
        "## Summary (means over each domain's cells)",
        "",
        *summary_table(records),
        "",
    ]
    if violations:
        lines += ["## Guardrail violations", ""] + [f"- {v}" for v in violations] + [""]
    for domain, recs in by_domain.items():
        lines += [f"## {domain}", ""]
        for question in ("knowledge", "skill"):
            lines += [f"### {QUESTION_TITLES[question]}", "", _verdict(recs, question, cfg.alpha), ""]
            lines += _cell_table(recs, question) + [""]
            if question == "knowledge":
                recall = [r["recall"]["metrics"]["trained"] for r in recs if "recall" in r]
                nll = _mean([m["nll"] for m in recall])
                em = _mean([m["exact_match"] for m in recall if "exact_match" in m])
                em_text = f", exact match {em:.2f}" if em is not None else ""
                lines += [
                    f"Verbatim recall (the trained plasmid on its own training items, mean over cells): "
                    f"NLL {_fmt(nll, 2)}{em_text}.",
                    "",
                ]
        cross: dict[str, list[float]] = defaultdict(list)
        for r in recs:
            for other, v in r["cross_domain"].items():
                cross[other].append(v["delta_nll"])
        lat = [r["latency"] for r in recs]
        if cross:
            parts = [f"{o}: {sum(v) / len(v):+.3f}" for o, v in cross.items()]
            lines += [f"Cross-domain raw NLL change of the {domain} plasmid (mean over cells): " + ", ".join(parts), ""]
        if lat:
            lines += [
                f"Inject+remove (median per cell, ms): side {max(x['side_median_ms'] for x in lat):.2f} at most, "
                f"merged {max(x['merged_median_ms'] for x in lat):.2f} at most.",
                "",
            ]
    if mono:
        lines += [
            "## Monolithic plasmid vs per-domain plasmids (skill)",
            "",
            "| domain | rank | scheme | seed | NLL base / monolithic / per-domain | calibrated "
            "| monolithic vs base (cal.) | per-domain vs monolithic (cal.) |",
            "|" + "---|" * 8,
        ]
        three = ("base", "monolithic", "trained")
        for r in mono:
            c, q = r["config"], r["questions"]["skill"]
            m, s = q["metrics"], q["statistics"]
            lines.append(
                f"| {c['domain']} | {c['rank']} | {c['scheme']} | {c['seed']} | {_arms(m, 'nll', three)} | "
                f"{_arms(m, 'nll_calibrated', three)} | {_diff(s, 'monolithic_vs_base', 'nll_calibrated')} | "
                f"{_diff(s, 'trained_vs_monolithic', 'nll_calibrated')} |"
            )
        lines.append("")
    return atomic_write_text(path, "\n".join(lines))


def write_forest_plot(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> Path:
    """Per question, one row per cell: calibrated NLL improvement over the base (95% CI), trained and both placebos."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in records if r["kind"] == "cell"]
    series = (
        ("trained_vs_base", "trained", "tab:blue"),
        ("placebo_a_vs_base", "placebo A", "tab:gray"),
        ("placebo_b_vs_base", "placebo B", "tab:orange"),
    )
    height = 0.3 * max(4, len(cells)) + 1.5
    fig, axes = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    for ax, question in zip(axes, ("knowledge", "skill"), strict=True):
        for offset, (name, label, color) in zip((-0.2, 0.0, 0.2), series, strict=True):
            ys, xs, lo, hi = [], [], [], []
            for i, r in enumerate(cells):
                s = r["questions"][question]["statistics"].get(name, {}).get("nll_calibrated")
                if s:
                    ys.append(i + offset)
                    xs.append(s["mean_diff"])
                    lo.append(s["mean_diff"] - s["ci_low"])
                    hi.append(s["ci_high"] - s["mean_diff"])
            ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=color, label=label, markersize=3, capsize=2)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title({"knowledge": "knowledge carried", "skill": "skill"}[question])
        ax.set_xlabel("calibrated NLL improvement over the base (nats/token, 95% CI)")
    axes[0].set_yticks(range(len(cells)))
    axes[0].set_yticklabels(
        [
            f"{r['config']['domain']} r{r['config']['rank']} {r['config']['scheme']} s{r['config']['seed']}"
            for r in cells
        ],
        fontsize=7,
    )
    axes[0].invert_yaxis()
    handles, labels = axes[1].get_legend_handles_labels()  # one legend above the panels: never over a cell's bars
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.955))
    fig.suptitle("Value-add: trained plasmid vs placebos")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
