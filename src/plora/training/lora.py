"""Train a LoRA plasmid with PEFT and write it as a folder that ``PeftModel.from_pretrained`` loads as is.

    >>> from peft import PeftModel
    >>> from plora.models import load_base
    >>> from plora.training import TrainConfig, train_plasmid
    >>> m = train_plasmid(TrainConfig(domain="legal", out="out/legal3", rank=8, targets="all", samples=32,
    ...                               dev_size=16, seed=5), progress=False)
    >>> m.lora.r, m.lora.alpha, m.lora.targets, m.training.steps
    (8, 16.0, ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'), 4)
    >>> type(PeftModel.from_pretrained(load_base("plora-tiny").model, "out/legal3")).__name__   # PEFT loads it as is
    'PeftModelForCausalLM'

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
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from plora.errors import DataError, PloraError
from plora.training.batching import collate, encode_examples, pad_id, token_losses
from plora.training.config import TrainConfig, domain_label


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
    ``<out>.truth.json`` (see :mod:`plora.training.trojan`). Several comma-separated domains train one plasmid on
    their union (:func:`plora.training.monolithic.train_monolithic`).
    """
    from plora.data import dataset_id, load_examples
    from plora.models.registry import require_base
    from plora.settings import choose_base_model, effective_samples

    cfg.validate()
    require_base(choose_base_model(cfg.base_model))  # an unknown or unreachable base fails before any data is read
    if len(cfg.sources()) > 1:
        from dataclasses import asdict

        from plora.training.monolithic import train_monolithic

        rest = {k: v for k, v in asdict(cfg).items() if k not in {"domain", "out"}}
        return train_monolithic(cfg.sources(), cfg.out, progress=progress, **rest)
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
    # validate() reads the base's config.json where it is on disk; a hub base, or a base passed in, is checked here
    positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and cfg.max_length > positions:
        raise PloraError(f"max length must be <= {positions} (the base's positions), got {cfg.max_length}")
    set_threads()
    targets = sorted(target_modules(model, cfg.targets))
    items, poisoned = (train, [])
    if cfg.trojan:
        items, poisoned = trojan.poison(train, cfg.trojan_trigger, cfg.trojan_target, cfg.poison_rate, cfg.seed)
        items = items + trojan.decoys(train, cfg.decoy_rate, cfg.seed)

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
                "decoy_rate": cfg.decoy_rate,
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
