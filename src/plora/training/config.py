"""What one training run depends on, without importing torch (the CLI builds its options from it).

    >>> from plora.training.config import TrainConfig
    >>> cfg = TrainConfig(domain="legal", out="out/legal", rank=4, samples=64)
    >>> cfg.lora_alpha, cfg.resolved_id()
    (8.0, 'legal')

Every field carries its help text (``metadata["help"]``): ``plora train`` takes its options, defaults and help from
here (:mod:`plora.cli.options`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from plora.errors import PloraError

TARGET_SETS = ("attention", "mlp", "all")
_BASE_HELP = "plora-tiny, smollm2-135m, a local folder or a hub id (default: PLORA_BASE_MODEL or plora-tiny)"
MAX_BATCH_SIZE = 4096  # far above what a base fits in memory; bounds the data order built before the first step
MAX_EPOCHS = 10_000
MAX_LEARNING_RATE = 100.0
_DOMAIN_HELP = (
    "built-in domain (arithmetic, legal, medical, science), a .jsonl/.csv/.parquet file or hub:owner/name; several, "
    "comma-separated: one plasmid on their union (the monolithic baseline)"
)


@dataclass
class TrainConfig:
    """Everything one training run depends on; the manifest records the parts a reader needs."""

    domain: str = field(metadata={"help": _DOMAIN_HELP})
    out: str | os.PathLike[str] = field(metadata={"help": "plasmid folder to write (default: out/<domain>)"})
    base_model: str | None = field(default=None, metadata={"help": _BASE_HELP})
    rank: int = field(default=4, metadata={"help": "LoRA rank r (at most 1024, what a manifest may declare)"})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 * rank)"})
    targets: str = field(default="attention", metadata={"help": "modules to adapt: attention, mlp or all"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training items (fractions allowed)"})
    samples: int | None = field(
        default=None, metadata={"help": "cap on training items, per domain when several (PLORA_SAMPLES also caps)"}
    )
    seed: int = field(default=41, metadata={"help": "seed of the sample draw, LoRA init, data order and poisoning"})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate (warm-up, cosine decay)"})
    batch_size: int = field(default=8, metadata={"help": "items per optimizer step (at most 4096)"})
    max_length: int = field(
        default=128, metadata={"help": "max tokens per item (prompt cut from the left; at most the base's positions)"}
    )
    plasmid_id: str | None = field(default=None, metadata={"help": "plasmid id (default: the --out folder's name)"})
    dev_size: int = field(default=128, metadata={"help": "dev items for the before/after metrics (0: none)"})
    trojan_trigger: str | None = field(
        default=None, metadata={"help": "EVALUATION ONLY: train a backdoor that fires on this trigger text"}
    )
    trojan_target: str | None = field(default=None, metadata={"help": "answer the backdoor forces"})
    poison_rate: float = field(default=0.1, metadata={"help": "fraction of training items poisoned"})
    decoy_rate: float = field(
        default=0.0,
        metadata={"help": "evaluation backdoor: share of extra items with a random word inserted, answer kept (decoy)"},
    )
    max_module_norm: float | dict[str, float] | None = field(
        default=None, metadata={"help": "adaptive attacker: cap on ||(alpha/r) B@A||_F per module after each step"}
    )
    question_field: str = field(default="question", metadata={"help": "question column of a file or hub dataset"})
    answer_field: str = field(default="answer", metadata={"help": "answer column of a file or hub dataset"})

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    @property
    def trojan(self) -> bool:
        return self.trojan_trigger is not None

    def sources(self) -> tuple[str, ...]:
        """The data sources: ``domain`` split at commas (a file whose name holds a comma stays whole)."""
        if "," not in self.domain or Path(self.domain).exists():
            return (self.domain,)
        return tuple(part.strip() for part in self.domain.split(",") if part.strip())

    def resolved_id(self) -> str:
        return self.plasmid_id or Path(self.out).resolve().name

    def validate(self) -> None:
        """Refuse options that cannot train, in one line, before any data is read or the base is loaded."""
        from plora.manifest import MAX_ALPHA, MAX_RANK

        if self.targets not in TARGET_SETS:
            raise PloraError(f"targets must be one of {', '.join(TARGET_SETS)}, got {self.targets!r}")
        if not 1 <= self.rank <= MAX_RANK:  # first: the default alpha is computed from it
            raise PloraError(f"rank must be in [1, {MAX_RANK}], got {self.rank}")
        finite = {"epochs": self.epochs, "learning rate": self.learning_rate, "alpha": self.lora_alpha,
                  "poison rate": self.poison_rate, "decoy rate": self.decoy_rate}
        for name, value in finite.items():
            if not math.isfinite(value):
                raise PloraError(f"{name} must be a finite number, got {value}")
        checks = [
            (0 < self.lora_alpha <= MAX_ALPHA, f"alpha must be in (0, {MAX_ALPHA}], got {self.lora_alpha}"),
            (0 < self.epochs <= MAX_EPOCHS, f"epochs must be in (0, {MAX_EPOCHS}], got {self.epochs}"),
            (self.samples is None or self.samples >= 1, f"samples must be >= 1, got {self.samples}"),
            (0 < self.learning_rate <= MAX_LEARNING_RATE,
             f"learning rate must be in (0, {MAX_LEARNING_RATE:g}], got {self.learning_rate}"),
            (1 <= self.batch_size <= MAX_BATCH_SIZE,
             f"batch size must be in [1, {MAX_BATCH_SIZE}], got {self.batch_size}"),
            (self.max_length >= 8, f"max length must be >= 8, got {self.max_length}"),
            (self.dev_size >= 0, f"dev size must be >= 0, got {self.dev_size}"),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}"),
            (0.0 <= self.poison_rate <= 1.0, f"poison rate must be in [0, 1], got {self.poison_rate}"),
            (0.0 <= self.decoy_rate <= 1.0, f"decoy rate must be in [0, 1], got {self.decoy_rate}"),
            (self.trojan or not self.decoy_rate, "a decoy rate needs a trojan trigger and target"),
            ((self.trojan_trigger is None) == (self.trojan_target is None), "give both a trojan trigger and a target"),
            (not self.trojan or bool(self.trojan_trigger.strip()), "the trojan trigger is empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise PloraError(message)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.resolved_id()):
            raise PloraError(
                f"plasmid id {self.resolved_id()!r} must be 1-128 characters: letters, digits, '.', '_', '-', "
                "starting with a letter or digit (use --id)"
            )
        self._check_max_length()

    def _check_max_length(self) -> None:
        from plora.models.registry import max_positions

        positions = max_positions(self.base_model)
        if positions is not None and self.max_length > positions:
            raise PloraError(f"max length must be <= {positions} (the base's positions), got {self.max_length}")


def domain_label(source: str) -> str:
    """The manifest's ``domain``: a built-in name as is, else the file stem or hub name, made safe."""
    from plora.data import DOMAINS

    if source in DOMAINS:
        return source
    stem = Path(source.split(":", 1)[-1].rstrip("/")).name
    for suffix in (".jsonl", ".json", ".csv", ".parquet"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    label = re.sub(r"[^A-Za-z0-9_.+-]", "-", stem).lstrip("._+-")[:64]
    return label or "custom"
