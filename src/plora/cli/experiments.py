"""`plora value-add`: the value-add experiment (also `python -m scripts.run_lora_value_add`).

$ plora value-add --domains arithmetic,science,legal --ranks 4,8 --schemes all --seeds 41,42,43 \
      --samples 128 --dev-size 256

Every option's default and help live once, in :class:`plora.experiments.value_add.ValueAddConfig`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from plora.cli.options import option
from plora.executor import ExecutorConfig
from plora.experiments.value_add import ValueAddConfig
from plora.swarm.config import make_config


def _split(text: str, what: str) -> list[str]:
    from plora.errors import PloraError

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise PloraError(f"--{what} is empty")
    return items


def _ints(text: str, what: str) -> list[int]:
    from plora.errors import PloraError

    try:
        return [int(t) for t in _split(text, what)]
    except ValueError:
        raise PloraError(f"--{what} takes comma-separated integers, got {text!r}") from None


def value_add(
    domains: str = option(ValueAddConfig, "domains", "--domains"),
    ranks: str = option(ValueAddConfig, "ranks", "--ranks"),
    schemes: str = option(ValueAddConfig, "schemes", "--schemes"),
    seeds: str = option(ValueAddConfig, "seeds", "--seeds"),
    samples: int = option(ValueAddConfig, "samples", "--samples", min=1),
    dev_size: int = option(ValueAddConfig, "dev_size", "--dev-size", min=1),
    calibration_size: int = option(ValueAddConfig, "calibration_size", "--calibration-size", min=1),
    cross_domain_size: int = option(ValueAddConfig, "cross_domain_size", "--cross-domain-size", min=1),
    epochs: float = option(ValueAddConfig, "epochs", "--epochs", min=0.01),
    learning_rate: float = option(ValueAddConfig, "learning_rate", "--lr", "--learning-rate", min=1e-8),
    base_model: str | None = option(ValueAddConfig, "base_model", "--base-model"),
    results_dir: Path = option(ValueAddConfig, "results_dir", "--results-dir"),
    work_dir: Path | None = option(ValueAddConfig, "work_dir", "--work-dir"),
    monolithic: bool = option(ValueAddConfig, "monolithic", "--monolithic/--no-monolithic"),
    resume: bool = option(ValueAddConfig, "resume", "--resume/--no-resume"),
    guardrails: bool = option(ValueAddConfig, "guardrails", "--guardrails/--no-guardrails"),
    alpha: float = option(ValueAddConfig, "alpha", "--alpha", min=1e-12, max=0.5),
    jobs: int = option(ExecutorConfig, "jobs"),
    ray_address: str | None = option(ExecutorConfig, "ray_address", "--ray-address", "--ray_address"),
) -> None:
    """Trained plasmid vs base vs placebos, per (domain, rank, scheme, seed): knowledge carried and skill."""
    from rich.console import Console

    from plora.errors import PloraError
    from plora.experiments.value_add import run_value_add

    cfg = ValueAddConfig(
        domains=_split(domains, "domains"),
        ranks=_ints(ranks, "ranks"),
        schemes=_split(schemes, "schemes"),
        seeds=_ints(seeds, "seeds"),
        samples=samples,
        dev_size=dev_size,
        calibration_size=calibration_size,
        cross_domain_size=cross_domain_size,
        epochs=epochs,
        learning_rate=learning_rate,
        base_model=base_model,
        results_dir=results_dir,
        work_dir=work_dir,
        monolithic=monolithic,
        resume=resume,
        guardrails=guardrails,
        alpha=alpha,
    )
    outcome = run_value_add(cfg, executor=make_config(ExecutorConfig, jobs=jobs, ray_address=ray_address))
    console = Console()
    cells = [r for r in outcome.records if r["kind"] == "cell"]
    for question in ("knowledge", "skill"):
        met = sum(1 for r in cells if r["questions"][question].get("meets_acceptance"))
        console.print(f"{question}: {met}/{len(cells)} cells meet the acceptance criteria")
    console.print(f"wrote {outcome.jsonl}, {outcome.markdown}, {outcome.plot}")
    if outcome.guardrail_violations and cfg.guardrails:
        raise PloraError("guardrail: " + "; ".join(outcome.guardrail_violations))


def register(app: typer.Typer) -> None:
    app.command("value-add")(value_add)
