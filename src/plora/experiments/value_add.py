"""The value-add experiment: what does a trained plasmid carry that an adapter of the same size would not?

    >>> from plora.experiments.value_add import ValueAddConfig, run_value_add
    >>> cfg = ValueAddConfig(domains=["arithmetic"], ranks=[4], schemes=["attention"], seeds=[41], samples=16,
    ...                      dev_size=16, calibration_size=16, epochs=1)    # a small cell; the seed's run: README
    >>> outcome = run_value_add(cfg, progress=False)
    >>> str(outcome.markdown), sorted(outcome.records[0]["questions"])
    ('results/value_add.md', ['knowledge', 'skill'])

For every cell (domain, rank, scheme, seed) a plasmid is trained (the seed sets the sample draw, the LoRA init and the
data order) and compared, item by item, with the base and two placebos of the same size (``plora.experiments.cells``)
on two questions (``plora.experiments.items``):

- *knowledge carried*: the plasmid's own training facts asked in the wording held out from its training (verbatim
  recall of the training items is reported beside it);
- *skill*: held-out facts (the dev split), never trained in any wording.

Each arm's answer NLL is reported raw and temperature-scaled (``plora.experiments.calibration``: one temperature per
arm, fitted on calibration items no question uses), so a gain that is only calibration shows as such. Statistics
(``plora.experiments.stats``): paired per-item differences, Wilcoxon signed-rank, paired bootstrap 95% CI, Cohen's
d_z, rank-biserial correlation, Holm correction across every test of the run. A question of a cell meets the
acceptance criteria when the trained plasmid beats the base, placebo A and placebo B on answer NLL, raw AND
calibrated, each with Holm p < alpha and a CI excluding 0. Records go to ``value_add.jsonl`` as each cell finishes; a
rerun with the same fingerprint resumes there.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plora.errors import PloraError
from plora.fsio import atomic_write_text, read_bounded

if TYPE_CHECKING:
    from plora.executor import ExecutorConfig

# bump when what a record measures changes: older records are then not resumed from (3: placebo B shuffles answers
# within each kind of question)
RECORD_VERSION = 3
ACCEPTANCE = ("trained_vs_base", "trained_vs_placebo_a", "trained_vs_placebo_b")
ACCEPTANCE_METRICS = ("nll", "nll_calibrated")
GUARD_NLL_MARGIN = 0.05  # nats/token
GUARD_EM_MARGIN = 0.02  # absolute exact-match rate
PLASMID_DIR = "value_add_plasmids"
RESULT_FILES = ("value_add.jsonl", "value_add.md", "value_add_forest.png")
MAX_RECORDS_BYTES = 256 << 20  # a record is ~20 KB: ten thousand cells
# The training budget a base needs for its plasmids to carry their facts into the held-out wording (README, "The
# value-add experiment"): (epochs, learning rate). plora-tiny (1.35M parameters) carries facts only once it has
# nearly memorised them; measured, seed 41, 128 items: 1-10 epochs left arithmetic and science within 0.1 nats of
# placebo B on knowledge, 20 epochs at 1e-2 gave +0.47 and +0.70 (calibrated). A pretrained base needs far less:
# SmolLM2-135M after one epoch at 3e-3, arithmetic: +0.29 nats over placebo B on knowledge (p 7e-8), EM 0.23.
TRAINING_BUDGETS = {"plora-tiny": (20.0, 1e-2)}
OTHER_BASES_BUDGET = (1.0, 3e-3)


@dataclass
class ValueAddConfig:
    """Every option of ``plora value-add`` (and ``python -m scripts.run_lora_value_add``), with its one default."""

    domains: list[str] = field(
        default_factory=lambda: ["arithmetic", "science", "legal"],
        metadata={"help": "built-in domains, comma-separated"},
    )
    ranks: list[int] = field(default_factory=lambda: [4, 8], metadata={"help": "LoRA ranks, comma-separated"})
    schemes: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={"help": "target schemes, comma-separated: attention, mlp, all (attention + MLP)"},
    )
    seeds: list[int] = field(
        default_factory=lambda: [41, 42, 43], metadata={"help": "training seeds (sample draw, LoRA init, data order)"}
    )
    samples: int = field(default=128, metadata={"help": "training items per plasmid (PLORA_SAMPLES caps too)"})
    dev_size: int = field(default=256, metadata={"help": "skill items per domain (dev split: facts never trained)"})
    calibration_size: int = field(
        default=128, metadata={"help": "items per domain each arm's temperature is fitted on (calibration split)"}
    )
    cross_domain_size: int = field(
        default=64, metadata={"help": "skill items of every other domain the trained plasmid is also scored on"}
    )
    epochs: float | None = field(
        default=None,
        metadata={"help": "passes over the training items (default: 20 on plora-tiny, 1 on other bases)"},
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW peak learning rate (default: 1e-2 on plora-tiny, 3e-3 on other bases)"}
    )
    base_model: str | None = field(default=None, metadata={"help": "base model (default: PLORA_BASE_MODEL)"})
    results_dir: Path = field(default=Path("results"), metadata={"help": "where value_add.{jsonl,md,_forest.png} go"})
    work_dir: Path | None = field(
        default=None,
        metadata={"help": f"where the cells' plasmids go (default: <results-dir>/{PLASMID_DIR}, never under out/)"},
    )
    monolithic: bool = field(default=False, metadata={"help": "also compare a plasmid trained on all the domains"})
    resume: bool = field(default=True, metadata={"help": "reuse finished cells from value_add.jsonl"})
    guardrails: bool = field(default=True, metadata={"help": "exit 2 when a placebo beats the base (see README)"})
    alpha: float = field(default=0.01, metadata={"help": "significance level of every test, after Holm"})
    n_resamples: int = field(default=2000, metadata={"help": "paired bootstrap resamples per confidence interval"})
    latency_repeats: int = field(default=20, metadata={"help": "side-mode inject+remove timings per cell"})

    def budget(self, base_name: str) -> tuple[float, float]:
        """(epochs, learning rate) in force on ``base_name``: the options if given, else the base's default."""
        epochs, lr = TRAINING_BUDGETS.get(base_name, OTHER_BASES_BUDGET)
        return (
            self.epochs if self.epochs is not None else epochs,
            self.learning_rate if self.learning_rate is not None else lr,
        )

    def plasmid_dir(self) -> Path:
        # Not under out/: `plora offer --root out/` would otherwise serve the placebos as plasmids.
        return self.work_dir if self.work_dir is not None else self.results_dir / PLASMID_DIR

    def validate(self) -> None:
        from plora.data import DOMAINS
        from plora.manifest import MAX_RANK
        from plora.outputs import OutputError, check_report_dir
        from plora.training.config import TARGET_SETS

        if not (self.domains and self.ranks and self.schemes and self.seeds):
            raise PloraError("give at least one domain, rank, scheme and seed")
        for d in self.domains:
            if d not in DOMAINS:
                raise PloraError(f"unknown domain {d!r} (value-add uses built-in domains: {', '.join(DOMAINS)})")
        for s in self.schemes:
            if s not in TARGET_SETS:
                raise PloraError(f"unknown scheme {s!r} (expected {', '.join(TARGET_SETS)})")
        checks = [
            (len(set(self.domains)) == len(self.domains), "domains repeat"),
            # a repeated value would measure one cell twice and count its tests twice in the Holm correction
            (len(set(self.ranks)) == len(self.ranks), f"ranks repeat: {self.ranks}"),
            (len(set(self.schemes)) == len(self.schemes), f"schemes repeat: {self.schemes}"),
            (len(set(self.seeds)) == len(self.seeds), f"seeds repeat: {self.seeds}"),
            (all(1 <= r <= MAX_RANK for r in self.ranks), f"ranks must be in [1, {MAX_RANK}], got {self.ranks}"),
            (all(0 <= s < 2**32 for s in self.seeds), f"seeds must be in [0, 2**32), got {self.seeds}"),
            (self.samples >= 1, f"samples must be >= 1, got {self.samples}"),
            (self.dev_size >= 1, f"dev size must be >= 1, got {self.dev_size}"),
            (self.calibration_size >= 1, f"calibration size must be >= 1, got {self.calibration_size}"),
            (self.cross_domain_size >= 1, f"cross-domain size must be >= 1, got {self.cross_domain_size}"),
            (
                self.epochs is None or 0 < self.epochs < math.inf,
                f"epochs must be a finite number > 0, got {self.epochs}",
            ),
            (
                self.learning_rate is None or 0 < self.learning_rate < math.inf,
                f"learning rate must be a finite number > 0, got {self.learning_rate}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PloraError(message)
        check_report_dir(self.results_dir, flag="--results-dir")
        for name in RESULT_FILES:
            path = self.results_dir / name
            if (path.exists() or path.is_symlink()) and not path.is_file():
                raise OutputError(f"--results-dir {self.results_dir}: {name} there is not a regular file")
        check_report_dir(self.plasmid_dir(), flag="--work-dir" if self.work_dir is not None else "--results-dir")

    def fingerprint(self, base_name: str, base_digest: str, data_digests: dict[str, str]) -> str:
        """What makes two records comparable: the base, the data, the effective sizes and the training budget.

        The sample count is the one in force (``--samples`` capped by PLORA_SAMPLES): a run under a smaller cap
        measures something else and is never resumed from."""
        from plora.settings import effective_samples

        key = [
            RECORD_VERSION,
            base_digest,
            effective_samples(self.samples),
            self.dev_size,
            self.calibration_size,
            self.cross_domain_size,
            *self.budget(base_name),
            sorted(self.domains),
            [data_digests[d] for d in sorted(self.domains)],
        ]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


@dataclass
class ValueAddOutcome:
    records: list[dict[str, Any]]
    jsonl: Path
    markdown: Path
    plot: Path
    guardrail_violations: list[str]


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of an earlier run; a line that is not one is refused by number (move the file, or --no-resume),
    except a torn last line, whose cell is simply redone."""
    if not path.exists() and not path.is_symlink():
        return []
    raw = read_bounded(path, MAX_RECORDS_BYTES, "value-add records (JSON lines)", PloraError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PloraError(f"{path}: not UTF-8 text (byte {err.start}); move it away or pass --no-resume") from None
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                continue  # torn by an interrupted write: that cell is redone
            raise PloraError(f"{path} line {number}: not JSON; move it away or pass --no-resume") from None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise PloraError(
                f"{path} line {number}: not a value-add record (a JSON object with a key); "
                "move it away or pass --no-resume"
            )
        records.append(record)
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


def _tests(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every test of the run: each question's comparisons on raw NLL, calibrated NLL and exact match."""
    return [
        test
        for r in records
        for question in r["questions"].values()
        for comparison in question["statistics"].values()
        for test in comparison.values()
    ]


def _where(r: dict[str, Any], question: str) -> str:
    c = r["config"]
    return f"{c['domain']} r{c['rank']} {c['scheme']} seed {c['seed']} ({question})"


def apply_holm(records: list[dict[str, Any]], alpha: float) -> list[str]:
    """Holm-correct every test of the run in place, flag what meets acceptance, return the guardrail violations.

    Guardrails, each needing Holm p < alpha, a CI above 0 AND a practical margin (a 0.004-nat shift can be
    "significant" on 256 paired items and means nothing), on either question:
    - placebo A (random, norm-matched) must not lower the *calibrated* answer NLL by more than GUARD_NLL_MARGIN: a
      random update of the same size must not add information. Its raw-NLL effect is reported, not judged: an
      over-confident base loses raw NLL to anything that flattens it, which is calibration, not information;
    - placebo B (answers shuffled) must not raise exact match by more than GUARD_EM_MARGIN. Its NLL gain over the
      base is expected, not a violation: it learns the answer format and vocabulary, which is exactly what it is
      there to control for (the trained-vs-placebo-B test is the value beyond format);
    - inject+remove in side mode (the mode the arms are evaluated with) must stay within PLORA_LATENCY_BUDGET_MS.
    """
    from plora.experiments.stats import holm, significant

    tests = _tests(records)
    for s, p in zip(tests, holm([s["p_value"] for s in tests]) if tests else [], strict=True):
        s["p_holm"] = float(p)
    violations = []
    for r in records:
        for qname, q in r["questions"].items():
            stats = q["statistics"]
            q["meets_acceptance"] = r["kind"] == "cell" and all(
                significant(stats.get(name, {}).get(metric), alpha)
                for name in ACCEPTANCE
                for metric in ACCEPTANCE_METRICS
            )
            a = stats.get("placebo_a_vs_base", {}).get("nll_calibrated")
            if significant(a, alpha, GUARD_NLL_MARGIN):
                violations.append(
                    f"placebo A beats the base on {_where(r, qname)} "
                    f"(calibrated NLL -{a['mean_diff']:.3f}, Holm p={a['p_holm']:.2g})"
                )
            b = stats.get("placebo_b_vs_base", {}).get("em")
            if significant(b, alpha, GUARD_EM_MARGIN):
                violations.append(
                    f"placebo B beats the base on {_where(r, qname)} "
                    f"(exact match +{b['mean_diff']:.3f}, Holm p={b['p_holm']:.2g})"
                )
        lat = r.get("latency") or {}
        if lat.get("budget_ms") is not None and lat["side_median_ms"] > lat["budget_ms"]:
            c = r["config"]
            violations.append(
                f"inject+remove (side mode) took {lat['side_median_ms']:.2f} ms in {c['domain']} r{c['rank']} "
                f"{c['scheme']} seed {c['seed']}, over the latency budget of {lat['budget_ms']:g} ms "
                "(PLORA_LATENCY_BUDGET_MS)"
            )
    return violations


_RUNNER: Any = None  # in each worker process (and inline): the CellRunner built once by _init_runner


def _init_runner(cfg: ValueAddConfig, fingerprint: str) -> None:
    """Executor initialiser: load the base model once per worker (each worker measures each domain's base once)."""
    global _RUNNER
    from plora.experiments.cells import CellRunner

    _RUNNER = CellRunner(cfg, fingerprint)


def _measure(task: tuple[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """One task: a cell (domain, rank, scheme, seed) or a monolithic (rank, scheme, seed) -> its records."""
    kind, args = task
    assert _RUNNER is not None, "_init_runner did not run"
    return [_RUNNER.cell(*args)] if kind == "cell" else _RUNNER.monolithic(*args)


def run_value_add(
    cfg: ValueAddConfig,
    progress: bool = True,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
    executor: ExecutorConfig | None = None,
) -> ValueAddOutcome:
    """Run (or resume) every cell, then correct, report and check the guardrails.

    Guardrail violations come back in the outcome (the report is written first; ``plora value-add`` then stops
    with an error). Inject+remove over PLORA_LATENCY_BUDGET_MS raises LoaderError at once. The base model is loaded
    only when a cell has to be measured: a finished run resumes in seconds. Cells run through
    :func:`plora.executor.run_tasks` (``executor``: in this process by default; ``jobs`` worker processes or Ray,
    each loading the base once); every task runs on one torch thread, so a cell's record is the same on every
    backend. Records are written as each task finishes, whatever the backend.
    """
    from plora.data import domain_digest
    from plora.executor import run_tasks
    from plora.experiments.cells import cell_key
    from plora.experiments.report import write_forest_plot, write_markdown
    from plora.models import base_digest, canonical_name

    cfg.validate()
    jsonl = cfg.results_dir / "value_add.jsonl"
    previous = _read_records(jsonl) if cfg.resume else []
    base_name = canonical_name(cfg.base_model)
    digests = {d: domain_digest(d) for d in cfg.domains}
    fingerprint = cfg.fingerprint(base_name, base_digest(base_name), digests)
    done = {r["key"]: r for r in previous if r.get("fingerprint") == fingerprint}
    cells = [(d, r, s, seed) for d in cfg.domains for r in cfg.ranks for s in cfg.schemes for seed in cfg.seeds]
    mono = [(r, s, seed) for r in cfg.ranks for s in cfg.schemes for seed in cfg.seeds] if cfg.monolithic else []
    tasks: list[tuple[str, tuple[Any, ...]]] = [("cell", c) for c in cells] + [("monolithic", m) for m in mono]
    task_keys = [
        [cell_key("cell", *args)] if kind == "cell" else [cell_key("monolithic", d, *args) for d in cfg.domains]
        for kind, args in tasks
    ]
    pending = [i for i, keys in enumerate(task_keys) if not all(k in done for k in keys)]
    found: dict[str, dict[str, Any]] = {k: done[k] for keys in task_keys for k in keys if k in done}

    def ordered() -> list[dict[str, Any]]:
        return [found[k] for keys in task_keys for k in keys if k in found]

    def finished(recs: list[dict[str, Any]]) -> None:
        found.update((r["key"], r) for r in recs)
        ours = {r["key"] for r in ordered()}
        _write_records(jsonl, ordered() + [v for k, v in done.items() if k not in ours])
        if on_cell:
            for r in recs:
                on_cell(r)

    run_tasks(
        _measure,
        [tasks[i] for i in pending],
        executor,
        init=_init_runner,
        init_args=(cfg, fingerprint),
        threads=1,
        on_result=lambda _, recs: finished(recs),
        label="value-add cells",
        progress=progress,
    )
    records = ordered()
    violations = apply_holm(records, cfg.alpha)
    _write_records(jsonl, records)
    markdown = write_markdown(cfg.results_dir / "value_add.md", records, cfg, violations)
    plot = write_forest_plot(cfg.results_dir / "value_add_forest.png", records)
    return ValueAddOutcome(records, jsonl, markdown, plot, violations)
