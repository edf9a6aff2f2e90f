"""Markdown tables and the forest plot of the value-add experiment.

>>> from plora.experiments.report import write_markdown, write_forest_plot
>>> write_forest_plot("results/value_add_forest.png", records)      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from plora.fsio import atomic_write_bytes, atomic_write_text


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "–" if x is None else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _diff(stats: dict[str, Any], name: str) -> str:
    s = stats.get(name)
    if not s:
        return "–"
    return f"{s['mean_diff']:+.3f} [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}] p={_p(s.get('p_holm'))}"


def _cell_table(records: list[dict[str, Any]]) -> list[str]:
    head = (
        "| rank | scheme | seed | NLL base | NLL trained | NLL placebo A | NLL placebo B | EM base → trained "
        "| Δ vs base [95% CI] Holm p | Δ vs placebo A | Δ vs placebo B | d_z | inject+remove ms (side / merged) |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in records:
        c, m, s = r["config"], r["metrics"], r["statistics"]
        em = "–"
        if "exact_match" in m["base"]:
            em = f"{m['base']['exact_match']:.2f} → {m['trained']['exact_match']:.2f}"
        dz = s.get("trained_vs_base", {}).get("cohen_dz")
        cells = [
            str(c["rank"]),
            c["scheme"],
            str(c["seed"]),
            _fmt(m["base"]["nll"]),
            _fmt(m["trained"]["nll"]),
            _fmt(m["placebo_a"]["nll"]),
            _fmt(m["placebo_b"]["nll"]),
            em,
            _diff(s, "trained_vs_base"),
            _diff(s, "trained_vs_placebo_a"),
            _diff(s, "trained_vs_placebo_b"),
            _fmt(dz, 2),
            f"{r['latency']['side_median_ms']:.2f} / {r['latency']['merged_median_ms']:.2f}",
        ]
        if r.get("meets_acceptance"):
            cells = [f"**{x}**" for x in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(records: list[dict[str, Any]]) -> str:
    n = len(records)
    k = sum(1 for r in records if r.get("meets_acceptance"))
    beats_base = sum(
        1
        for r in records
        if (s := r["statistics"].get("trained_vs_base"))
        and s["mean_diff"] > 0
        and s["p_holm"] < 0.01
        and s["ci_low"] > 0
    )
    return (
        f"trained plasmid beats the base in {beats_base}/{n} cells, and the base and both placebos in {k}/{n} cells "
        f"(Holm p < 0.01, CI excluding 0)"
    )


def _format_share(records: list[dict[str, Any]]) -> str:
    gains = [
        (r["statistics"]["trained_vs_base"]["mean_diff"], r["statistics"]["placebo_b_vs_base"]["mean_diff"])
        for r in records
        if "trained_vs_base" in r["statistics"] and "placebo_b_vs_base" in r["statistics"]
    ]
    total = sum(t for t, _ in gains)
    if not gains or total <= 0:
        return ""
    share = sum(b for _, b in gains) / total
    return (
        f"Placebo B (shuffled answers) recovers {100 * share:.0f}% of the trained plasmid's NLL gain over the base "
        "(mean over cells): that part is answer format, not knowledge."
    )


def write_markdown(
    path: str | os.PathLike[str], records: list[dict[str, Any]], cfg: Any, violations: list[str]
) -> Path:
    cells = [r for r in records if r["kind"] == "cell"]
    mono = [r for r in records if r["kind"] == "monolithic"]
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in cells:
        by_domain[r["config"]["domain"]].append(r)
    base = cells[0]["config"]["base_model"] if cells else "?"
    lines = [
        "# Value-add experiment",
        "",
        f"Base model `{base}`; {cfg.samples} training samples per plasmid; dev split of up to {cfg.dev_size} "
        f"held-out items per domain; {len(cells)} cells. NLL is the mean answer-token negative log-likelihood "
        "(nats/token, lower is better); Δ is the paired per-example NLL improvement (reference − candidate, "
        "positive = the trained plasmid is better) with its paired-bootstrap 95% CI and the Holm-corrected Wilcoxon "
        "signed-rank p over every test of the run. **Bold** rows meet the acceptance criteria: better than the base "
        "and both placebos, Holm p < 0.01, CI excluding 0. Placebo A: random LoRA with the trained plasmid's "
        "per-module norms; placebo B: same training with answers shuffled across examples.",
        "",
        "Guardrails (the run stops if one fails): placebo A must not lower NLL by more than 0.05 nats/token, and "
        "placebo B must not raise exact match by more than 0.02, each judged with Holm p < 0.01 and a CI above 0. "
        "Placebo B lowering NLL is expected and reported, not a failure: it learns the answer format, so the "
        "'Δ vs placebo B' column is the value beyond format.",
        "",
    ]
    if violations:
        lines += ["## Guardrail violations", ""] + [f"- {v}" for v in violations] + [""]
    for domain, recs in by_domain.items():
        lines += [f"## {domain}", "", _verdict(recs) + ".", _format_share(recs), ""] + _cell_table(recs) + [""]
        cross: dict[str, list[float]] = defaultdict(list)
        for r in recs:
            for other, v in r["cross_domain"].items():
                cross[other].append(v["delta_nll"])
        if cross:
            parts = [f"{o}: {sum(v) / len(v):+.3f}" for o, v in cross.items()]
            lines += [f"Cross-domain NLL change of the {domain} plasmid (mean over cells): " + ", ".join(parts), ""]
    if mono:
        lines += [
            "## Monolithic plasmid vs per-domain plasmids",
            "",
            "| domain | rank | scheme | seed | NLL base | NLL monolithic | NLL per-domain | monolithic vs base "
            "| per-domain vs monolithic |",
            "|" + "---|" * 9,
        ]
        for r in mono:
            c, m, s = r["config"], r["metrics"], r["statistics"]
            lines.append(
                f"| {c['domain']} | {c['rank']} | {c['scheme']} | {c['seed']} | {_fmt(m['base']['nll'])} | "
                f"{_fmt(m['monolithic']['nll'])} | {_fmt(m.get('trained', {}).get('nll'))} | "
                f"{_diff(s, 'monolithic_vs_base')} | {_diff(s, 'trained_vs_monolithic')} |"
            )
        lines.append("")
    return atomic_write_text(path, "\n".join(lines))


def write_forest_plot(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> Path:
    """One row per cell: NLL improvement over the base (95% CI) of the trained plasmid and both placebos."""
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
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(4, len(cells)) + 1.5))
    for offset, (name, label, color) in zip((-0.2, 0.0, 0.2), series, strict=True):
        ys, xs, lo, hi = [], [], [], []
        for i, r in enumerate(cells):
            s = r["statistics"].get(name)
            if s:
                ys.append(i + offset)
                xs.append(s["mean_diff"])
                lo.append(s["mean_diff"] - s["ci_low"])
                hi.append(s["ci_high"] - s["mean_diff"])
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=color, label=label, markersize=4, capsize=2)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels(
        [
            f"{r['config']['domain']} r{r['config']['rank']} {r['config']['scheme']} s{r['config']['seed']}"
            for r in cells
        ],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("NLL improvement over the base (nats/token, 95% CI)")
    ax.set_title("Value-add: trained plasmid vs placebos")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
