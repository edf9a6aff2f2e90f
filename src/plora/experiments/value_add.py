"""The value-add experiment: does a trained plasmid beat the base AND placebos of the same size?

    >>> from plora.experiments.value_add import ValueAddConfig, run_value_add
    >>> cfg = ValueAddConfig(domains=["arithmetic", "legal"], ranks=[4], schemes=["all"], seeds=[41])
    >>> outcome = run_value_add(cfg)                       # doctest: +SKIP
    >>> outcome.markdown                                   # results/value_add.md

For every cell (domain, rank, scheme, seed) it trains a plasmid (the seed sets the sample draw, the LoRA init and
the data order), and measures per example on the domain's held-out dev split (facts never seen in training):

- the base model;
- the trained plasmid, injected as a side path (``plora.loader``);
- placebo A: a random LoRA with the same rank and targets and the same per-module update norms;
- placebo B: the same training with answers shuffled across examples;
- the trained plasmid on every other domain of the run (cross-domain deltas).

Metrics: answer-token NLL (primary) and, where answers are short, exact match by greedy decoding. Statistics
(``plora.experiments.stats``): paired per-example differences, Wilcoxon signed-rank, paired bootstrap 95% CI,
Cohen's d_z and the rank-biserial correlation, Holm correction across every test of the run. A cell meets the
acceptance criteria when the trained plasmid beats the base, placebo A and placebo B, each with Holm p < 0.01 and a
CI that excludes 0. Records go to ``value_add.jsonl`` as each cell finishes, so an interrupted run resumes there.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.fsio import atomic_write_text

COMPARISONS = {
    # name: (reference, candidate): improvement = NLL(reference) - NLL(candidate)
    "trained_vs_base": ("base", "trained"),
    "placebo_a_vs_base": ("base", "placebo_a"),
    "placebo_b_vs_base": ("base", "placebo_b"),
    "trained_vs_placebo_a": ("placebo_a", "trained"),
    "trained_vs_placebo_b": ("placebo_b", "trained"),
}
MONOLITHIC_COMPARISONS = {
    "monolithic_vs_base": ("base", "monolithic"),
    "trained_vs_monolithic": ("monolithic", "trained"),
}
ACCEPTANCE = ("trained_vs_base", "trained_vs_placebo_a", "trained_vs_placebo_b")
GUARD_NLL_MARGIN = 0.05  # nats/token
GUARD_EM_MARGIN = 0.02  # absolute exact-match rate


@dataclass
class ValueAddConfig:
    domains: list[str]
    ranks: list[int] = field(default_factory=lambda: [4])
    schemes: list[str] = field(default_factory=lambda: ["attention"])
    seeds: list[int] = field(default_factory=lambda: [41])
    samples: int = 128
    dev_size: int = 256
    epochs: float = 1.0
    base_model: str | None = None
    results_dir: Path = Path("results")
    work_dir: Path = Path("out/value_add")
    monolithic: bool = False
    alpha: float = 0.01
    n_resamples: int = 2000
    latency_repeats: int = 20
    resume: bool = True

    def fingerprint(self, base_digest: str) -> str:
        """What makes two records comparable: same base, data sizes and training length."""
        key = json.dumps([base_digest, self.samples, self.dev_size, self.epochs, sorted(self.domains)])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class ValueAddOutcome:
    records: list[dict[str, Any]]
    jsonl: Path
    markdown: Path
    plot: Path
    guardrail_violations: list[str]


def cell_key(kind: str, domain: str, rank: int, scheme: str, seed: int) -> str:
    return f"{kind}|{domain}|r{rank}|{scheme}|s{seed}"


def _evaluate(model: Any, tokenizer: Any, examples: Sequence[Any], short: bool) -> dict[str, np.ndarray]:
    from plora.training.metrics import answer_nll, exact_match

    out = {"nll": answer_nll(model, tokenizer, examples)}
    if short:
        out["em"] = exact_match(model, tokenizer, examples)
    return out


def _evaluate_plasmid(model: Any, tokenizer: Any, folder: Path, examples: Sequence[Any], short: bool) -> dict:
    from plora.loader import injected

    with injected(model, folder, mode="side"):
        return _evaluate(model, tokenizer, examples, short)


def _latency(model: Any, folder: Path, repeats: int) -> dict[str, float]:
    from plora.loader import check_latency_budget, measure_inject_remove

    side = measure_inject_remove(model, folder, mode="side", repeats=repeats)
    merged = measure_inject_remove(model, folder, mode="merged", repeats=repeats)
    # The budget applies to the mode this experiment evaluates with (side); merged is recorded for reference.
    budget = check_latency_budget(side.median_ms, what="inject+remove (side mode)")
    return {"side_median_ms": side.median_ms, "merged_median_ms": merged.median_ms, "budget_ms": budget}


def _stats(
    per_variant: dict[str, dict[str, np.ndarray]],
    comparisons: dict[str, tuple[str, str]],
    cfg: ValueAddConfig,
    seed: int,
) -> dict[str, Any]:
    from plora.experiments.stats import paired_comparison

    out: dict[str, Any] = {}
    for name, (ref, cand) in comparisons.items():
        if ref not in per_variant or cand not in per_variant:
            continue
        s = paired_comparison(per_variant[ref]["nll"], per_variant[cand]["nll"], seed=seed, n_resamples=cfg.n_resamples)
        out[name] = s.to_dict()
        if "em" in per_variant[ref] and "em" in per_variant[cand]:
            em = paired_comparison(
                per_variant[cand]["em"], per_variant[ref]["em"], seed=seed, n_resamples=cfg.n_resamples
            )
            out[name]["em"] = em.to_dict()
    return out


def _summary(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    out = {"nll": float(metrics["nll"].mean())}
    if "em" in metrics:
        out["exact_match"] = float(metrics["em"].mean())
    return out


class _Runner:
    """Holds the base model, dev splits and base measurements shared by every cell."""

    def __init__(self, cfg: ValueAddConfig) -> None:
        from plora.data import domain_info, load_examples
        from plora.models import load_base

        self.cfg = cfg
        self.base = load_base(cfg.base_model)
        self.fingerprint = cfg.fingerprint(self.base.digest)
        self.dev = {d: load_examples(d, split="dev", samples=cfg.dev_size, seed=0) for d in cfg.domains}
        self.short = {d: domain_info(d).short_answers for d in cfg.domains}
        self.base_metrics = {
            d: _evaluate(self.base.model, self.base.tokenizer, self.dev[d], self.short[d]) for d in cfg.domains
        }

    def _config(self, domain: str, rank: int, scheme: str, seed: int) -> dict[str, Any]:
        return {
            "domain": domain,
            "rank": rank,
            "scheme": scheme,
            "seed": seed,
            "samples": self.cfg.samples,
            "dev_size": len(self.dev[domain]),
            "epochs": self.cfg.epochs,
            "base_model": self.base.name,
        }

    def _train(self, folder: Path, domain: str, rank: int, scheme: str, seed: int, shuffle: bool) -> None:
        from plora.data import dataset_id, load_examples
        from plora.experiments.placebo import shuffle_answers
        from plora.settings import effective_samples
        from plora.training import TrainConfig, train_and_write

        cfg = TrainConfig(
            domain=domain,
            out=folder,
            base_model=self.base.name,
            rank=rank,
            targets=scheme,
            epochs=self.cfg.epochs,
            samples=self.cfg.samples,
            seed=seed,
            dev_size=0,
        )
        train = load_examples(domain, split="train", samples=effective_samples(self.cfg.samples), seed=seed)
        if shuffle:
            train = shuffle_answers(train, seed)
        dataset = dataset_id(domain) + (":answers-shuffled" if shuffle else "")
        train_and_write(
            cfg, train, [], domain=domain, dataset=dataset, short_answers=self.short[domain], progress=False
        )

    def cell(self, domain: str, rank: int, scheme: str, seed: int) -> dict[str, Any]:
        from plora.experiments.placebo import random_placebo

        t0 = time.perf_counter()
        stem = self.cfg.work_dir / f"{domain}-r{rank}-{scheme}-s{seed}"
        trained, placebo_a, placebo_b = (stem / "trained", stem / "placebo_a", stem / "placebo_b")
        self._train(trained, domain, rank, scheme, seed, shuffle=False)
        random_placebo(trained, placebo_a, seed=seed)
        self._train(placebo_b, domain, rank, scheme, seed, shuffle=True)
        model, tok = self.base.model, self.base.tokenizer
        latency = _latency(model, trained, self.cfg.latency_repeats)
        dev, short = self.dev[domain], self.short[domain]
        variants = {"base": self.base_metrics[domain]}
        for name, folder in (("trained", trained), ("placebo_a", placebo_a), ("placebo_b", placebo_b)):
            variants[name] = _evaluate_plasmid(model, tok, folder, dev, short)
        cross = {}
        for other in self.cfg.domains:
            if other == domain:
                continue
            on_other = _evaluate_plasmid(model, tok, trained, self.dev[other], False)["nll"]
            base_other = self.base_metrics[other]["nll"]
            cross[other] = {
                "nll_base": float(base_other.mean()),
                "nll_trained": float(on_other.mean()),
                "delta_nll": float(on_other.mean() - base_other.mean()),
            }
        return {
            "kind": "cell",
            "key": cell_key("cell", domain, rank, scheme, seed),
            "fingerprint": self.fingerprint,
            "config": self._config(domain, rank, scheme, seed),
            "metrics": {name: _summary(m) for name, m in variants.items()},
            "statistics": _stats(variants, COMPARISONS, self.cfg, seed),
            "latency": latency,
            "cross_domain": cross,
            "plasmids": {"trained": str(trained), "placebo_a": str(placebo_a), "placebo_b": str(placebo_b)},
            "seconds": round(time.perf_counter() - t0, 2),
        }

    def monolithic(self, rank: int, scheme: str, seed: int) -> list[dict[str, Any]]:
        """One plasmid on the union of the run's domains, against each domain's own plasmid on its dev split."""
        from plora.training import train_monolithic

        folder = self.cfg.work_dir / f"monolithic-r{rank}-{scheme}-s{seed}"
        train_monolithic(
            self.cfg.domains,
            folder,
            epochs=self.cfg.epochs,
            samples=self.cfg.samples,
            rank=rank,
            seed=seed,
            base_model=self.base.name,
            targets=scheme,
            dev_size=0,
            progress=False,
        )
        model, tok = self.base.model, self.base.tokenizer
        records = []
        for domain in self.cfg.domains:
            per_domain = self.cfg.work_dir / f"{domain}-r{rank}-{scheme}-s{seed}" / "trained"
            variants = {"base": self.base_metrics[domain]}
            variants["monolithic"] = _evaluate_plasmid(model, tok, folder, self.dev[domain], self.short[domain])
            if (per_domain / "plora.yml").exists():
                variants["trained"] = _evaluate_plasmid(model, tok, per_domain, self.dev[domain], self.short[domain])
            records.append(
                {
                    "kind": "monolithic",
                    "key": cell_key("monolithic", domain, rank, scheme, seed),
                    "fingerprint": self.fingerprint,
                    "config": self._config(domain, rank, scheme, seed),
                    "metrics": {name: _summary(m) for name, m in variants.items()},
                    "statistics": _stats(variants, MONOLITHIC_COMPARISONS, self.cfg, seed),
                    "plasmids": {"monolithic": str(folder), "trained": str(per_domain)},
                }
            )
        return records


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from an interrupted run: that cell is simply redone
    return records


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(_finite(r), sort_keys=True) + "\n" for r in records)
    atomic_write_text(path, text)


def _holm_slots(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every test of the run: each comparison's NLL test and, where measured, its exact-match test."""
    slots = []
    for r in records:
        for stats in r["statistics"].values():
            slots.append(stats)
            if "em" in stats:
                slots.append(stats["em"])
    return slots


def _significant(s: dict[str, Any] | None, alpha: float, margin: float = 0.0) -> bool:
    return bool(s) and s["mean_diff"] > margin and s["p_holm"] < alpha and s["ci_low"] > 0


def apply_holm(records: list[dict[str, Any]], alpha: float) -> list[str]:
    """Holm-correct every test of the run in place, flag the cells that meet acceptance, return guardrail violations.

    Guardrails, each needing Holm p < alpha, a CI above 0 AND a practical margin (a 0.004-nat shift can be
    "significant" on 256 paired items and means nothing):
    - placebo A (random, norm-matched) must not lower answer NLL by more than GUARD_NLL_MARGIN: a random update
      of the same size that helps means the evaluation is broken;
    - placebo B (answers shuffled) must not raise exact match by more than GUARD_EM_MARGIN. Its NLL gain over the
      base is expected, not a violation: it learns the answer format and vocabulary, which is exactly what it is
      there to control for (the trained-vs-placebo-B test is the value-add beyond format).
    """
    from plora.experiments.stats import holm

    slots = _holm_slots(records)
    for s, p in zip(slots, holm([s["p_value"] for s in slots]) if slots else [], strict=True):
        s["p_holm"] = float(p)
    violations = []
    for r in records:
        stats, c = r["statistics"], r["config"]
        r["meets_acceptance"] = r["kind"] == "cell" and all(_significant(stats.get(n), alpha) for n in ACCEPTANCE)
        where = f"{c['domain']} r{c['rank']} {c['scheme']} seed {c['seed']}"
        a = stats.get("placebo_a_vs_base")
        if _significant(a, alpha, GUARD_NLL_MARGIN):
            violations.append(
                f"placebo A beats the base on {where} (NLL -{a['mean_diff']:.3f}, Holm p={a['p_holm']:.2g})"
            )
        b = stats.get("placebo_b_vs_base", {}).get("em")
        if _significant(b, alpha, GUARD_EM_MARGIN):
            violations.append(
                f"placebo B beats the base on {where} (exact match +{b['mean_diff']:.3f}, Holm p={b['p_holm']:.2g})"
            )
    return violations


def run_value_add(
    cfg: ValueAddConfig, progress: bool = True, on_cell: Callable[[dict[str, Any]], None] | None = None
) -> ValueAddOutcome:
    """Run (or resume) every cell, then correct, report and check the guardrails.

    Guardrail violations come back in the outcome (the report is written first; ``plora value-add`` then stops
    with an error). Inject+remove over PLORA_LATENCY_BUDGET_MS raises LoaderError at once.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from plora.experiments.report import write_forest_plot, write_markdown

    for d in cfg.domains:
        from plora.data import DOMAINS

        if d not in DOMAINS:
            raise PloraError(f"unknown domain {d!r} (value-add uses built-in domains: {', '.join(DOMAINS)})")
    if not (cfg.domains and cfg.ranks and cfg.schemes and cfg.seeds):
        raise PloraError("give at least one domain, rank, scheme and seed")
    jsonl = cfg.results_dir / "value_add.jsonl"
    runner = _Runner(cfg)
    previous = _read_records(jsonl) if cfg.resume else []
    done = {r["key"]: r for r in previous if r.get("fingerprint") == runner.fingerprint}
    cells = [(d, r, s, seed) for d in cfg.domains for r in cfg.ranks for s in cfg.schemes for seed in cfg.seeds]
    mono = [(r, s, seed) for r in cfg.ranks for s in cfg.schemes for seed in cfg.seeds] if cfg.monolithic else []
    records: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("value-add cells", total=len(cells) + len(mono))
        for d, r, s, seed in cells:
            key = cell_key("cell", d, r, s, seed)
            bar.update(task, description=f"{d} r{r} {s} seed {seed}")
            rec = done.get(key) or runner.cell(d, r, s, seed)
            records.append(rec)
            _write_records(jsonl, records + [v for k, v in done.items() if k not in {x["key"] for x in records}])
            if on_cell:
                on_cell(rec)
            bar.advance(task)
        for r, s, seed in mono:
            keys = [cell_key("monolithic", d, r, s, seed) for d in cfg.domains]
            bar.update(task, description=f"monolithic r{r} {s} seed {seed}")
            recs = [done[k] for k in keys] if all(k in done for k in keys) else runner.monolithic(r, s, seed)
            records.extend(recs)
            _write_records(jsonl, records)
            bar.advance(task)
    violations = apply_holm(records, cfg.alpha)
    _write_records(jsonl, records)
    markdown = write_markdown(cfg.results_dir / "value_add.md", records, cfg, violations)
    plot = write_forest_plot(cfg.results_dir / "value_add_forest.png", records)
    outcome = ValueAddOutcome(records, jsonl, markdown, plot, violations)
    return outcome


def config_dict(cfg: ValueAddConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
