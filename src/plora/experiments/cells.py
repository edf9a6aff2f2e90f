"""One value-add cell, measured: train the plasmid and placebo B, build placebo A, score every arm on both questions.

    >>> import numpy as np
    >>> from plora.experiments.cells import Scores, paired_statistics
    >>> base = Scores({"nll": np.array([3.0, 2.5, 4.0, 3.2]), "nll_calibrated": np.array([2.9, 2.5, 3.7, 3.0])})
    >>> trained = Scores({"nll": np.array([1.0, 1.5, 2.0, 1.1]), "nll_calibrated": np.array([1.1, 1.5, 2.1, 1.2])})
    >>> stats = paired_statistics({"base": base, "trained": trained}, {"trained_vs_base": ("base", "trained")}, 0, 200)
    >>> round(stats["trained_vs_base"]["nll_calibrated"]["mean_diff"], 3)    # per item: base - trained
    1.55

``CellRunner(cfg, fingerprint).cell(domain, rank, scheme, seed)`` measures one cell this way on real models
(``run_value_add`` drives it).

Arms: the base; the trained plasmid; placebo A (random LoRA, the trained one's per-module norms); placebo B (same
training, answers shuffled among examples asking the same kind of thing). Each arm gets one temperature, fitted on
the calibration items (``plora.experiments.calibration``), and is scored on the knowledge and skill items
(``plora.experiments.items``) with answer NLL, raw and at its temperature, and exact match where the domain's answers
are short. The base is scored
once per domain, on the union of every seed's items, and reused by all of that domain's cells; every other arm is
hot-loaded (side path) into that same model, which is loaded once for the whole run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ARMS = ("base", "trained", "placebo_a", "placebo_b")
QUESTIONS = ("knowledge", "skill")
COMPARISONS = {
    # name: (reference, candidate): improvement = NLL(reference) - NLL(candidate); for exact match, the reverse
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


def cell_key(kind: str, domain: str, rank: int, scheme: str, seed: int) -> str:
    return f"{kind}|{domain}|r{rank}|{scheme}|s{seed}"


class Scores:
    """One arm's per-item scores on one item set: ``nll``, ``nll_calibrated`` and (maybe) ``em`` arrays."""

    def __init__(self, values: dict[str, np.ndarray]) -> None:
        self.values = values

    @classmethod
    def measure(cls, model: Any, tokenizer: Any, items: Sequence[Any], temperature: float, short: bool) -> Scores:
        from plora.training.metrics import score_items

        s = score_items(model, tokenizer, items, (1.0, temperature), with_exact_match=short)
        values = {"nll": s.nll[0], "nll_calibrated": s.nll[1]}
        if s.exact_match is not None:
            values["em"] = s.exact_match
        return cls(values)

    def take(self, rows: list[int]) -> Scores:
        return Scores({k: v[rows] for k, v in self.values.items()})

    def summary(self) -> dict[str, float | None]:
        """Means over the items (None for an empty set: a tiny PLORA_SAMPLES may leave no knowledge item)."""
        names = {"nll": "nll", "nll_calibrated": "nll_calibrated", "em": "exact_match"}
        return {names[k]: (float(v.mean()) if v.size else None) for k, v in self.values.items()}


ITEMS_FILE = "items.npz"  # per cell, beside its plasmids: every arm's per-item scores, to re-derive any statistic


def write_item_scores(path: Path, arms: dict[str, dict[str, Scores]], items: dict[str, list[Any]]) -> Path:
    """Every item's score per question, arm and metric (``<question>/<arm>/<metric>`` float arrays, in the order of
    ``<question>/questions``), written atomically; read back with ``numpy.load(path)`` (no pickle needed)."""
    import io

    from plora.fsio import atomic_write_bytes

    arrays: dict[str, np.ndarray] = {}
    for question, by_arm in arms.items():
        arrays[f"{question}/questions"] = np.array([qa.question for qa in items[question]], dtype=np.str_)
        for arm, scores in by_arm.items():
            for metric, values in scores.values.items():
                arrays[f"{question}/{arm}/{metric}"] = np.asarray(values, dtype=np.float64)
    buffer = io.BytesIO()
    savez: Any = np.savez_compressed  # its stub types **kwds as if one could be allow_pickle
    savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def paired_statistics(
    arms: dict[str, Scores], comparisons: dict[str, tuple[str, str]], seed: int, n_resamples: int
) -> dict[str, dict[str, Any]]:
    """Per comparison: paired tests on raw NLL, calibrated NLL and exact match (positive = candidate better)."""
    from plora.experiments.stats import paired_comparison

    out: dict[str, dict[str, Any]] = {}
    for name, (ref, cand) in comparisons.items():
        if ref not in arms or cand not in arms:
            continue
        r, c = arms[ref].values, arms[cand].values
        block = {}
        for metric in ("nll", "nll_calibrated"):
            block[metric] = paired_comparison(r[metric], c[metric], seed=seed, n_resamples=n_resamples).to_dict()
        if "em" in r and "em" in c:
            block["em"] = paired_comparison(c["em"], r["em"], seed=seed, n_resamples=n_resamples).to_dict()
        out[name] = block
    return out


def question_block(
    arms: dict[str, Scores], comparisons: dict[str, tuple[str, str]], seed: int, n_resamples: int
) -> dict[str, Any]:
    n = len(next(iter(arms.values())).values["nll"])
    return {
        "n": n,
        "metrics": {name: s.summary() for name, s in arms.items()},
        "statistics": paired_statistics(arms, comparisons, seed, n_resamples) if n else {},
    }


class _DomainBase:
    """The base model's temperature and scores on a domain: skill items and every seed's knowledge items."""

    def __init__(self, runner: CellRunner, domain: str) -> None:
        from plora.experiments.calibration import fit_temperature
        from plora.experiments.items import cell_items

        cfg, base = runner.cfg, runner.base
        self.items = {
            seed: cell_items(domain, runner.samples, seed, cfg.dev_size, cfg.calibration_size) for seed in cfg.seeds
        }
        first = self.items[cfg.seeds[0]]  # skill and calibration items do not depend on the seed
        self.calibration, self.skill_items = first.calibration, first.skill
        pool: dict[str, Any] = {}
        for items in self.items.values():
            for qa in items.knowledge:
                pool.setdefault(qa.question, qa)
        self.row = {q: i for i, q in enumerate(pool)}
        started = time.perf_counter()
        self.temperature = fit_temperature(base.model, base.tokenizer, self.calibration)
        short = runner.short[domain]
        self.skill = Scores.measure(base.model, base.tokenizer, self.skill_items, self.temperature, short)
        self.pool = Scores.measure(base.model, base.tokenizer, list(pool.values()), self.temperature, short)
        self.seconds = time.perf_counter() - started

    def on(self, items: Sequence[Any]) -> Scores:
        return self.pool.take([self.row[qa.question] for qa in items])


class CellRunner:
    """Holds the base model (loaded once), each domain's base measurements, and measures cells."""

    def __init__(self, cfg: Any, fingerprint: str) -> None:
        from plora.data import domain_info
        from plora.models import load_base
        from plora.settings import effective_samples
        from plora.training.lora import set_threads

        self.cfg = cfg
        self.fingerprint = fingerprint
        self.samples = effective_samples(cfg.samples)
        self.base = load_base(cfg.base_model)
        self.epochs, self.learning_rate = cfg.budget(self.base.name)
        set_threads()
        self.short = {d: domain_info(d).short_answers for d in cfg.domains}
        self._bases: dict[str, _DomainBase] = {}

    def domain_base(self, domain: str) -> _DomainBase:
        if domain not in self._bases:
            self._bases[domain] = _DomainBase(self, domain)
        return self._bases[domain]

    def config(self, domain: str, rank: int, scheme: str, seed: int) -> dict[str, Any]:
        return {
            "domain": domain,
            "rank": rank,
            "scheme": scheme,
            "seed": seed,
            "samples": self.samples,
            "dev_size": len(self.domain_base(domain).skill_items),
            "calibration_size": len(self.domain_base(domain).calibration),
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "base_model": self.base.name,
        }

    def _train(self, folder: Path, domain: str, rank: int, scheme: str, seed: int, items: list[Any], shuffle: bool):
        from plora.data import dataset_id
        from plora.experiments.placebo import shuffle_answers
        from plora.training import TrainConfig, train_and_write

        cfg = TrainConfig(
            domain=domain,
            out=folder,
            base_model=self.base.name,
            rank=rank,
            targets=scheme,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            samples=self.samples,
            seed=seed,
            dev_size=0,
        )
        train = shuffle_answers(items, seed) if shuffle else items
        dataset = dataset_id(domain) + (":answers-shuffled-within-kind" if shuffle else "")
        train_and_write(
            cfg,
            train,
            [],
            domain=domain,
            dataset=dataset,
            short_answers=self.short[domain],
            progress=False,
            base=self.base,
        )

    def _arm(self, folder: Path, domain: str, sets: dict[str, list[Any]]) -> tuple[float, dict[str, Scores]]:
        """Hot-load a plasmid, fit its temperature, score it on each item set."""
        from plora.experiments.calibration import fit_temperature
        from plora.loader import injected

        model, tok, short = self.base.model, self.base.tokenizer, self.short[domain]
        with injected(model, folder, mode="side"):
            t = fit_temperature(model, tok, self.domain_base(domain).calibration)
            return t, {name: Scores.measure(model, tok, items, t, short) for name, items in sets.items()}

    def cell(self, domain: str, rank: int, scheme: str, seed: int) -> dict[str, Any]:
        from plora.experiments.placebo import random_placebo

        t0 = time.perf_counter()
        base = self.domain_base(domain)
        for other in self.cfg.domains:
            self.domain_base(other)  # measured once for the run, not counted in this cell's seconds
        t0 = time.perf_counter()
        items = base.items[seed]
        train, knowledge = items.train, items.knowledge
        stem = Path(self.cfg.plasmid_dir()) / f"{domain}-r{rank}-{scheme}-s{seed}"
        folders = {"trained": stem / "trained", "placebo_a": stem / "placebo_a", "placebo_b": stem / "placebo_b"}
        self._train(folders["trained"], domain, rank, scheme, seed, train, shuffle=False)
        random_placebo(folders["trained"], folders["placebo_a"], seed=seed)
        self._train(folders["placebo_b"], domain, rank, scheme, seed, train, shuffle=True)
        trained_at = time.perf_counter()
        latency = _latency(self.base.model, folders["trained"], self.cfg.latency_repeats)

        sets = {"knowledge": knowledge, "skill": base.skill_items}
        temperatures = {"base": base.temperature}
        arms: dict[str, dict[str, Scores]] = {"base": {"knowledge": base.on(knowledge), "skill": base.skill}}
        for name, folder in folders.items():
            extra = {"recall": train} if name == "trained" else {}
            temperatures[name], arms[name] = self._arm(folder, domain, {**sets, **extra})
        questions = {
            q: question_block({a: arms[a][q] for a in ARMS}, COMPARISONS, seed, self.cfg.n_resamples) for q in QUESTIONS
        }
        recall = {"n": len(train), "metrics": {"trained": arms["trained"]["recall"].summary()}}
        items_file = write_item_scores(stem / ITEMS_FILE, {q: {a: arms[a][q] for a in ARMS} for q in QUESTIONS},
                                       {"knowledge": knowledge, "skill": base.skill_items})
        return {
            "kind": "cell",
            "key": cell_key("cell", domain, rank, scheme, seed),
            "fingerprint": self.fingerprint,
            "config": self.config(domain, rank, scheme, seed),
            "temperatures": temperatures,
            "questions": questions,
            "recall": recall,
            "latency": latency,
            "cross_domain": self._cross_domain(domain, folders["trained"]),
            "plasmids": {name: str(folder) for name, folder in folders.items()},
            "items_file": str(items_file),
            "seconds": round(time.perf_counter() - t0, 2),
            "seconds_training": round(trained_at - t0, 2),
        }

    def _cross_domain(self, domain: str, trained: Path) -> dict[str, dict[str, float]]:
        """Raw answer NLL of the trained plasmid on the first skill items of every other domain, against the base."""
        from plora.loader import injected
        from plora.training.metrics import answer_nll

        out = {}
        model, tok, size = self.base.model, self.base.tokenizer, self.cfg.cross_domain_size
        for other in self.cfg.domains:
            if other == domain:
                continue
            other_base = self.domain_base(other)
            with injected(model, trained, mode="side"):
                nll = answer_nll(model, tok, other_base.skill_items[:size])
            base_nll = other_base.skill.values["nll"][:size]
            out[other] = {
                "n": len(base_nll),
                "nll_base": float(base_nll.mean()),
                "nll_trained": float(nll.mean()),
                "delta_nll": float(nll.mean() - base_nll.mean()),
            }
        return out

    def monolithic(self, rank: int, scheme: str, seed: int) -> list[dict[str, Any]]:
        """One plasmid on the union of the run's domains, against each domain's own plasmid on its skill items."""
        from plora.training import train_monolithic

        folder = Path(self.cfg.plasmid_dir()) / f"monolithic-r{rank}-{scheme}-s{seed}"
        train_monolithic(
            self.cfg.domains,
            folder,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            samples=self.samples,
            rank=rank,
            seed=seed,
            base_model=self.base.name,
            targets=scheme,
            dev_size=0,
            progress=False,
        )
        records = []
        for domain in self.cfg.domains:
            base = self.domain_base(domain)
            per_domain = Path(self.cfg.plasmid_dir()) / f"{domain}-r{rank}-{scheme}-s{seed}" / "trained"
            arms = {"base": base.skill}
            temperatures = {"base": base.temperature}
            temperatures["monolithic"], scores = self._arm(folder, domain, {"skill": base.skill_items})
            arms["monolithic"] = scores["skill"]
            if (per_domain / "plora.yml").exists():
                temperatures["trained"], scores = self._arm(per_domain, domain, {"skill": base.skill_items})
                arms["trained"] = scores["skill"]
            records.append(
                {
                    "kind": "monolithic",
                    "key": cell_key("monolithic", domain, rank, scheme, seed),
                    "fingerprint": self.fingerprint,
                    "config": self.config(domain, rank, scheme, seed),
                    "temperatures": temperatures,
                    "questions": {"skill": question_block(arms, MONOLITHIC_COMPARISONS, seed, self.cfg.n_resamples)},
                    "plasmids": {"monolithic": str(folder), "trained": str(per_domain)},
                }
            )
        return records


def _latency(model: Any, folder: Path, repeats: int) -> dict[str, float]:
    """Inject+remove timings and the budget in force. Over budget is a guardrail of the run (judged with the others
    once every cell is measured, after the report is written), not an error of this cell."""
    from plora.loader import measure_inject_remove
    from plora.settings import get_settings

    side = measure_inject_remove(model, folder, mode="side", repeats=repeats)
    # The budget applies to the mode this experiment evaluates with (side); merged is recorded for reference, with
    # fewer repeats: on SmolLM2 one merged inject+remove of 210 modules takes a quarter of a second.
    merged = measure_inject_remove(model, folder, mode="merged", repeats=max(3, repeats // 4))
    budget = get_settings().latency_budget_ms
    return {"side_median_ms": side.median_ms, "merged_median_ms": merged.median_ms, "budget_ms": budget}
