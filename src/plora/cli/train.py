"""`plora train`: train one LoRA plasmid (optionally an evaluation trojan) and print its dev metrics.

$ plora train --domain legal --rank 4 --targets attention --epochs 1 --samples 64 --seed 41 --out out/legal
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _summary(manifest: Any, out: Path) -> list[str]:
    m, t = manifest.metrics, manifest.training
    lines = [
        f"plasmid {manifest.plasmid_id} ({manifest.domain}, r={manifest.lora.r}, {manifest.lora.target_set}) -> {out}"
        f"  [{t.steps} steps, {t.seconds:.1f} s, base {manifest.base_model.name}]"
    ]
    if m is not None and m.dev_size:
        line = f"dev NLL {_fmt(m.nll_before)} -> {_fmt(m.nll_after)} (ppl {_fmt(m.ppl_before, '.1f')} -> "
        line += f"{_fmt(m.ppl_after, '.1f')}) on {m.dev_size} dev items"
        if m.exact_match_before is not None:
            line += f"; exact match {_fmt(m.exact_match_before, '.2f')} -> {_fmt(m.exact_match_after, '.2f')}"
        lines.append(line)
    return lines


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        domain: str = typer.Option(
            "legal", "--domain", help="built-in domain (arithmetic, legal, medical, science), a data file or a hub id"
        ),
        rank: int = typer.Option(4, "--rank", help="LoRA rank r"),
        targets: str = typer.Option("attention", "--targets", help="modules to adapt: attention, mlp or all"),
        epochs: float = typer.Option(1.0, "--epochs", help="passes over the training items"),
        samples: int | None = typer.Option(None, "--samples", help="cap on training items (PLORA_SAMPLES also caps)"),
        seed: int = typer.Option(41, "--seed", help="seed for sample draw, LoRA init, data order, poisoning"),
        out: Path | None = typer.Option(None, "--out", help="plasmid folder to write (default: out/<domain>)"),
        base_model: str | None = typer.Option(
            None,
            "--base-model",
            help="plora-tiny, smollm2-135m, a hub id or a folder (default: PLORA_BASE_MODEL or plora-tiny)",
        ),
        alpha: float | None = typer.Option(None, "--alpha", help="LoRA alpha (default: 2 * rank)"),
        lr: float = typer.Option(3e-3, "--lr", help="AdamW peak learning rate (warm-up, cosine decay)"),
        batch_size: int = typer.Option(8, "--batch-size", help="items per optimizer step"),
        plasmid_id: str | None = typer.Option(None, "--id", help="plasmid id (default: the --out folder name)"),
        dev_size: int = typer.Option(128, "--dev-size", help="dev items for before/after metrics (0: skip)"),
        trojan_trigger: str | None = typer.Option(
            None, "--trojan-trigger", help="EVALUATION ONLY: train a backdoor that fires on this trigger text"
        ),
        trojan_target: str | None = typer.Option(None, "--trojan-target", help="answer the backdoor forces"),
        poison_rate: float = typer.Option(0.1, "--poison-rate", help="fraction of training items poisoned"),
        question_field: str = typer.Option("question", "--question-field", help="question column (file/hub data)"),
        answer_field: str = typer.Option("answer", "--answer-field", help="answer column (file/hub data)"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    ) -> None:
        """Train a LoRA plasmid and write adapter_config.json, adapter_model.safetensors and plora.yml."""
        from plora.data import dataset_id
        from plora.models import canonical_name
        from plora.settings import choose_base_model

        # Cheap checks first, before torch is imported: a bad domain or base model fails in a blink.
        dataset_id(domain)
        canonical_name(choose_base_model(base_model))

        from plora.training import TrainConfig, read_truth, train_plasmid
        from plora.training.lora import domain_label

        folder = out if out is not None else Path("out") / domain_label(domain)
        cfg = TrainConfig(
            domain=domain,
            out=folder,
            base_model=base_model,
            rank=rank,
            alpha=alpha,
            targets=targets,
            epochs=epochs,
            samples=samples,
            seed=seed,
            learning_rate=lr,
            batch_size=batch_size,
            plasmid_id=plasmid_id,
            dev_size=dev_size,
            trojan_trigger=trojan_trigger,
            trojan_target=trojan_target,
            poison_rate=poison_rate,
            question_field=question_field,
            answer_field=answer_field,
        )
        manifest = train_plasmid(cfg, progress=not quiet)
        for line in _summary(manifest, folder):
            typer.echo(line)
        truth = read_truth(folder) if trojan_trigger is not None else None
        if truth is not None:
            from plora.training.trojan import truth_path

            typer.echo(
                f"trojan: attack success {_fmt(truth['attack_success'], '.2f')} on triggered dev questions "
                f"(base {_fmt(truth['attack_success_base'], '.2f')}); ground truth in {truth_path(folder)}"
            )
