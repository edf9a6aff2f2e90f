"""`plora train`: train one LoRA plasmid (optionally an evaluation trojan) and print its dev metrics.

    plora train --domain legal --rank 4 --targets attention --epochs 1 --samples 64 --seed 41 --out out/legal
    plora train --domains arithmetic,legal,medical --samples 64 --output out/monolithic_r4   # one plasmid, 3 domains

Options, defaults and help come from :class:`plora.training.config.TrainConfig` (``python -m
scripts.monolithic_train`` runs this same command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from plora.cli.options import option
from plora.training.config import TrainConfig, domain_label


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


FORCE_HELP = "replace an existing --out folder even if it holds more than a plasmid (never a source or the cwd)"


def train(
    domain: str = option(TrainConfig, "domain", "--domain", "--domains"),
    rank: int = option(TrainConfig, "rank", "--rank"),
    targets: str = option(TrainConfig, "targets", "--targets"),
    epochs: float = option(TrainConfig, "epochs", "--epochs"),
    samples: int | None = option(TrainConfig, "samples", "--samples"),
    seed: int = option(TrainConfig, "seed", "--seed"),
    out: Path | None = option(TrainConfig, "out", "--out", "--output", default=None),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    base_model: str | None = option(TrainConfig, "base_model", "--base-model"),
    alpha: float | None = option(TrainConfig, "alpha", "--alpha"),
    learning_rate: float = option(TrainConfig, "learning_rate", "--lr"),
    batch_size: int = option(TrainConfig, "batch_size", "--batch-size"),
    max_length: int = option(TrainConfig, "max_length", "--max-length"),
    plasmid_id: str | None = option(TrainConfig, "plasmid_id", "--id"),
    dev_size: int = option(TrainConfig, "dev_size", "--dev-size"),
    trojan_trigger: str | None = option(TrainConfig, "trojan_trigger", "--trojan-trigger"),
    trojan_target: str | None = option(TrainConfig, "trojan_target", "--trojan-target"),
    poison_rate: float = option(TrainConfig, "poison_rate", "--poison-rate"),
    decoy_rate: float = option(TrainConfig, "decoy_rate", "--decoy-rate"),
    question_field: str = option(TrainConfig, "question_field", "--question-field"),
    answer_field: str = option(TrainConfig, "answer_field", "--answer-field"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Train a LoRA plasmid and write adapter_config.json, adapter_model.safetensors and plora.yml."""
    fields = {k: v for k, v in locals().items() if k in TrainConfig.__dataclass_fields__ and k != "out"}
    from plora.data.loaders import dataset_id, local_file
    from plora.models.registry import hub_unreachable, require_base
    from plora.outputs import check_output_dir
    from plora.settings import choose_base_model

    # Cheap checks first, before torch is imported: a bad domain, base model or output path fails in a blink.
    cfg = TrainConfig(out=out if out is not None else Path("out") / domain_label(domain), **fields)
    cfg.validate()
    if any(dataset_id(source).startswith("hub:") for source in cfg.sources()):
        hub_unreachable()  # offline: datasets reads its cache at once instead of retrying for 30 s
    base = Path(require_base(choose_base_model(base_model)))
    # never replace the data or a local base folder: --force may empty a folder, not the run's own inputs
    sources = [path for path in map(local_file, cfg.sources()) if path is not None]
    check_output_dir(cfg.out, force=force, sources=[*sources, *([base] if base.is_absolute() else [])])

    from plora.training import read_truth, train_plasmid

    manifest = train_plasmid(cfg, progress=not quiet)
    for line in _summary(manifest, Path(cfg.out)):
        typer.echo(line)
    truth = read_truth(cfg.out) if trojan_trigger is not None else None
    if truth is not None:
        from plora.training.trojan import truth_path

        typer.echo(
            f"trojan: attack success {_fmt(truth['attack_success'], '.2f')} on triggered dev questions "
            f"(base {_fmt(truth['attack_success_base'], '.2f')}); ground truth in {truth_path(cfg.out)}"
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
