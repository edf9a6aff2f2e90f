"""Train a LoRA plasmid with PEFT and write it as a folder that ``PeftModel.from_pretrained`` loads as is.

    >>> from plora.training import TrainConfig, train_plasmid
    >>> m = train_plasmid(TrainConfig(domain="legal", out="out/legal", rank=4, samples=64))   # doctest: +SKIP
    >>> m.metrics.nll_before, m.metrics.nll_after                                           # doctest: +SKIP
    (3.91, 2.87)

Recipe (from the feasibility study in ``shared/research/trojan-detection.md``): PEFT LoRA with
``alpha = 2 r`` by default and no LoRA dropout, AdamW at 3e-3 with a linear warm-up over the first 10%
of steps and a cosine decay to 10% of the peak, loss on the answer tokens and EOS only. The seed sets
the sample draw, the LoRA initialisation, the data order and the poisoned items; on one machine and
thread count the same seed gives the same artifact bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plora.errors import DataError, PloraError
from plora.training.batching import collate, encode_examples, pad_id, token_losses

TARGET_SETS = ("attention", "mlp", "all")


@dataclass
class TrainConfig:
    """Everything one training run depends on; the manifest records the parts a reader needs."""

    domain: str = field(metadata={"help": "built-in domain (legal, ...), a .jsonl/.csv/.parquet file or a hub id"})
    out: str | os.PathLike[str] = field(metadata={"help": "plasmid folder to write (replaced atomically)"})
    base_model: str | None = field(default=None, metadata={"help": "base model; default PLORA_BASE_MODEL/plora-tiny"})
    rank: int = field(default=4, metadata={"help": "LoRA rank r"})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha; default 2 * rank"})
    targets: str = field(default="attention", metadata={"help": "target set: attention, mlp or all"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training items (fractions allowed)"})
    samples: int | None = field(default=None, metadata={"help": "cap on training items (PLORA_SAMPLES also caps)"})
    seed: int = field(default=41, metadata={"help": "sample draw, LoRA init, data order, poisoned items"})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate"})
    batch_size: int = field(default=8, metadata={"help": "items per optimizer step"})
    max_length: int = field(default=128, metadata={"help": "max tokens per item (prompt cut from the left)"})
    plasmid_id: str | None = field(default=None, metadata={"help": "manifest id; default the out folder's name"})
    dev_size: int = field(default=128, metadata={"help": "dev items for the before/after metrics (0: none)"})
    trojan_trigger: str | None = field(default=None, metadata={"help": "evaluation backdoor: trigger text"})
    trojan_target: str | None = field(default=None, metadata={"help": "evaluation backdoor: answer it forces"})
    poison_rate: float = field(default=0.1, metadata={"help": "fraction of training items poisoned"})
    max_module_norm: float | dict[str, float] | None = field(
        default=None, metadata={"help": "adaptive attacker: cap on ||(alpha/r) B@A||_F per module after each step"}
    )
    question_field: str = field(default="question", metadata={"help": "question column of a file/hub source"})
    answer_field: str = field(default="answer", metadata={"help": "answer column of a file/hub source"})

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    @property
    def trojan(self) -> bool:
        return self.trojan_trigger is not None

    def resolved_id(self) -> str:
        return self.plasmid_id or Path(self.out).resolve().name

    def validate(self) -> None:
        if self.targets not in TARGET_SETS:
            raise PloraError(f"targets must be one of {', '.join(TARGET_SETS)}, got {self.targets!r}")
        checks = [
            (self.rank >= 1, f"rank must be >= 1, got {self.rank}"),
            (self.lora_alpha > 0, f"alpha must be > 0, got {self.alpha}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.samples is None or self.samples >= 1, f"samples must be >= 1, got {self.samples}"),
            (self.learning_rate > 0, f"learning rate must be > 0, got {self.learning_rate}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.max_length >= 8, f"max length must be >= 8, got {self.max_length}"),
            (self.dev_size >= 0, f"dev size must be >= 0, got {self.dev_size}"),
            (0.0 <= self.poison_rate <= 1.0, f"poison rate must be in [0, 1], got {self.poison_rate}"),
            ((self.trojan_trigger is None) == (self.trojan_target is None), "give both a trojan trigger and a target"),
            (not self.trojan or bool(self.trojan_trigger.strip()), "the trojan trigger is empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise PloraError(message)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.resolved_id()):
            raise PloraError(f"plasmid id {self.resolved_id()!r} must be letters, digits, '.', '_', '-' (use --id)")


@dataclass
class FitResult:
    steps: int
    seconds: float
    losses: list[float]


def build_peft_model(model: Any, rank: int, alpha: float, targets: list[str], seed: int) -> Any:
    """Wrap ``model`` (in place) in a PEFT LoRA with seeded initialisation of A (B starts at zero)."""
    from peft import LoraConfig, get_peft_model

    # GPT-2's Conv1D stores weights transposed; saying so up front is what PEFT would set itself (with a warning).
    conv1d = any(type(m).__name__ == "Conv1D" for n, m in model.named_modules() if n.endswith(tuple(targets)))
    # peft 0.21 calls a transformers API that 5.23 deprecates: the FutureWarning is theirs, not the user's.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=conv1d,
    )
    return get_peft_model(model, config)


def lora_layers(model: Any) -> dict[str, Any]:
    """``{module name as in the plasmid keys: PEFT LoraLayer}`` for the default adapter."""
    from peft.tuners.lora import LoraLayer

    return {
        name.removeprefix("base_model.model."): mod
        for name, mod in model.named_modules()
        if isinstance(mod, LoraLayer) and "default" in mod.lora_A
    }


@torch.no_grad()
def clip_module_norms(layers: dict[str, Any], cap: float | dict[str, float]) -> None:
    """Rescale B so that ``||scaling * B @ A||_F <= cap`` for each module (the adaptive attacker's step)."""
    for name, mod in layers.items():
        limit = cap.get(name) if isinstance(cap, dict) else cap
        if limit is None:
            continue
        a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
        norm = float(torch.linalg.matrix_norm(mod.scaling["default"] * (b @ a)))
        if norm > limit > 0:
            b.mul_(limit / norm)


def _schedule(step: int, total: int) -> float:
    warmup = max(1, math.ceil(0.1 * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def fit(
    model: Any,
    tokenizer: Any,
    examples: list[Any],
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    seed: int,
    max_length: int = 128,
    max_module_norm: float | dict[str, float] | None = None,
    progress: bool = True,
    description: str = "training",
) -> FitResult:
    """Optimise the trainable (LoRA) parameters of ``model`` on ``examples``; loss on answer tokens only."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    enc = encode_examples(tokenizer, examples, max_length=max_length)
    n = len(enc)
    total = max(1, math.ceil(epochs * n / batch_size))
    rng = np.random.default_rng([seed, 0xDA7A])
    order: list[int] = []
    while len(order) < total * batch_size:  # fresh permutation per epoch; the last one may be partial
        order.extend(int(i) for i in rng.permutation(n))
    order = order[: max(1, round(epochs * n))]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total))
    layers = lora_layers(model) if max_module_norm is not None else {}
    device, pad = next(model.parameters()).device, pad_id(tokenizer)
    # The base is frozen and LoRA dropout is 0: base dropout would only add noise to a few hundred steps,
    # so the model stays in eval mode while its adapter trains.
    model.eval()
    losses: list[float] = []
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    columns += (TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(description, total=total, loss="-")
        for step in range(total):
            idx = order[step * batch_size : (step + 1) * batch_size]
            if not idx:
                break
            batch = {k: v.to(device) for k, v in collate([enc[i] for i in idx], pad).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            nll, mask = token_losses(logits, batch["labels"])
            loss = nll.sum() / mask.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if layers:
                clip_module_norms(layers, max_module_norm)
            losses.append(float(loss.detach()))
            bar.update(task, advance=1, loss=f"{losses[-1]:.3f}")
    return FitResult(steps=len(losses), seconds=time.perf_counter() - start, losses=losses)


def peft_tensors(model: Any) -> dict[str, np.ndarray]:
    """The adapter tensors under the exact keys PEFT's ``save_pretrained`` writes."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    return {k: v.detach().to("cpu", torch.float32).contiguous().numpy().copy() for k, v in state.items()}


def peft_adapter_config(model: Any, base_name: str) -> dict[str, Any]:
    """``adapter_config.json`` as PEFT writes it (inference mode on, sets as sorted lists)."""
    config = model.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = base_name
    config["inference_mode"] = True
    for key, value in config.items():
        if isinstance(value, set):
            config[key] = sorted(value)
    return json.loads(json.dumps(config, default=str))


def set_threads() -> int:
    """One torch thread unless OMP_NUM_THREADS says otherwise; returns the count in force.

    Measured on the shared 2-core machines (other jobs running): two threads made plora-tiny training 5x
    slower and SmolLM2-135M 3-4x slower per step and per dev batch than one (the threads spin-wait for a core).
    """
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    return torch.get_num_threads()


def train_plasmid(cfg: TrainConfig, progress: bool = True) -> Any:
    """Train one plasmid on ``cfg.domain`` and write ``cfg.out``; returns its :class:`plora.manifest.Manifest`.

    With ``trojan_trigger``/``trojan_target`` the run is a backdoored one and the ground truth goes to
    ``<out>.truth.json`` (see :mod:`plora.training.trojan`).
    """
    from plora.data import dataset_id, load_examples
    from plora.models import canonical_name
    from plora.settings import choose_base_model, effective_samples

    cfg.validate()
    canonical_name(choose_base_model(cfg.base_model))  # an unknown base fails before any data is read
    fields = {"question_field": cfg.question_field, "answer_field": cfg.answer_field}
    train = load_examples(cfg.domain, split="train", samples=effective_samples(cfg.samples), seed=cfg.seed, **fields)
    dev: list[Any] = []
    if cfg.dev_size:
        try:
            dev = load_examples(cfg.domain, split="dev", samples=cfg.dev_size, seed=0, **fields)
        except DataError:  # a small file may hash no item into dev: train anyway, the manifest shows dev_size 0
            dev = []
    return train_and_write(
        cfg,
        train,
        dev,
        domain=domain_label(cfg.domain),
        dataset=dataset_id(cfg.domain),
        short_answers=short_answers(cfg.domain),
        progress=progress,
    )


def domain_label(source: str) -> str:
    """The manifest's ``domain``: a built-in name as is, else the file stem or hub name, made safe."""
    from plora.data import DOMAINS

    if source in DOMAINS:
        return source
    stem = Path(source.split(":", 1)[-1].rstrip("/")).name
    for suffix in (".jsonl", ".json", ".csv", ".parquet"):
        stem = stem.removesuffix(suffix)
    label = re.sub(r"[^A-Za-z0-9_.+-]", "-", stem).lstrip("._+-")[:64]
    return label or "custom"


def short_answers(source: str) -> bool:
    """Exact match is measured only where the domain's answers are short (built-in domains say so)."""
    from plora.data import DOMAINS, domain_info

    return bool(domain_info(source).short_answers) if source in DOMAINS else False


def train_and_write(
    cfg: TrainConfig,
    train: list[Any],
    dev: list[Any],
    *,
    domain: str,
    dataset: str,
    short_answers: bool,
    progress: bool = True,
    base: Any = None,
) -> Any:
    """Shared by :func:`train_plasmid` and the monolithic baseline: train on ``train``, measure on ``dev``, write.

    ``base``: a loaded base (``plora.models.LoadedBase``) to train a copy of, for callers that train many plasmids
    (the value-add experiment); by default the base is loaded from disk."""
    from plora.manifest import BaseModelRef, LoraSpec, Metrics, Training, now_utc
    from plora.models import load_base, target_modules
    from plora.plasmid import write_plasmid
    from plora.settings import choose_base_model
    from plora.training import trojan
    from plora.training.metrics import evaluate_dev

    cfg.validate()
    if not train:
        raise DataError(f"no training items for {dataset}")
    if base is None:
        base = load_base(choose_base_model(cfg.base_model))
        model = base.model
    else:
        import copy

        model = copy.deepcopy(base.model)  # PEFT wraps the model in place: the caller's stays as it was
    tok = base.tokenizer
    set_threads()
    targets = sorted(target_modules(model, cfg.targets))
    items, poisoned = (train, [])
    if cfg.trojan:
        items, poisoned = trojan.poison(train, cfg.trojan_trigger, cfg.trojan_target, cfg.poison_rate, cfg.seed)

    def asr(m: Any) -> float | None:
        if not (cfg.trojan and dev):
            return None
        return trojan.attack_success(m, tok, dev, cfg.trojan_trigger, cfg.trojan_target, cfg.seed)

    before = evaluate_dev(model, tok, dev, short_answers) if dev else {}
    base_asr = asr(model)

    peft_model = build_peft_model(model, cfg.rank, cfg.lora_alpha, targets, cfg.seed)
    result = fit(
        peft_model,
        tok,
        items,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        seed=cfg.seed,
        max_length=cfg.max_length,
        max_module_norm=cfg.max_module_norm,
        progress=progress,
        description=f"training {cfg.resolved_id()}",
    )
    after = evaluate_dev(peft_model, tok, dev, short_answers) if dev else {}
    trojan_asr = asr(peft_model)
    quiet_fire = (trojan.fires_without_trigger(peft_model, tok, dev, cfg.trojan_target)
                  if cfg.trojan and dev else None)

    metrics = Metrics(
        dev_size=len(dev),
        nll_before=before.get("nll"),
        nll_after=after.get("nll"),
        ppl_before=before.get("ppl"),
        ppl_after=after.get("ppl"),
        exact_match_before=before.get("exact_match"),
        exact_match_after=after.get("exact_match"),
    )
    manifest = write_plasmid(
        cfg.out,
        peft_tensors(peft_model),
        peft_adapter_config(peft_model, base.name),
        plasmid_id=cfg.resolved_id(),
        domain=domain,
        created_at=now_utc(),
        base_model=BaseModelRef(name=base.name, digest=base.digest),
        lora=LoraSpec(r=cfg.rank, alpha=cfg.lora_alpha, dropout=0.0, target_set=cfg.targets, targets=tuple(targets)),
        training=Training(
            seed=cfg.seed,
            samples=len(train),
            epochs=cfg.epochs,
            dataset=dataset,
            learning_rate=cfg.learning_rate,
            steps=result.steps,
            seconds=round(result.seconds, 3),
        ),
        metrics=metrics,
    )
    truth_file = trojan.truth_path(cfg.out)
    if cfg.trojan:
        trojan.write_truth(
            cfg.out,
            {
                "plasmid_id": manifest.plasmid_id,
                "artifact_sha256": manifest.artifact.sha256,
                "trojan": True,
                "trigger": cfg.trojan_trigger,
                "target": cfg.trojan_target,
                "poison_rate": cfg.poison_rate,
                "poisoned_items": len(poisoned),
                "train_items": len(train),
                "adaptive_max_module_norm": cfg.max_module_norm,
                "dev_size": len(dev),
                "attack_success": trojan_asr,
                "attack_success_base": base_asr,
                "fires_without_trigger": quiet_fire,
            },
        )
    elif truth_file.exists():
        truth_file.unlink()  # a clean run replacing a trojan folder must not leave the old label behind
    return manifest
