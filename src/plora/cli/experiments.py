"""`plora value-add`: the value-add experiment (also `python -m scripts.run_lora_value_add`)."""

from __future__ import annotations

from pathlib import Path

import typer


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
    domains: str = typer.Option("arithmetic,science,legal", "--domains", help="comma-separated built-in domains"),
    ranks: str = typer.Option("4,8", "--ranks", help="comma-separated LoRA ranks"),
    schemes: str = typer.Option(
        "all", "--schemes", help="comma-separated target schemes: attention, mlp, all (attention + MLP)"
    ),
    seeds: str = typer.Option("41,42,43", "--seeds", help="comma-separated training seeds"),
    samples: int = typer.Option(128, "--samples", min=1, help="training items per plasmid (PLORA_SAMPLES caps too)"),
    dev_size: int = typer.Option(256, "--dev-size", min=1, help="held-out dev items per domain"),
    epochs: float = typer.Option(1.0, "--epochs", min=0.01, help="passes over the training items"),
    base_model: str | None = typer.Option(None, "--base-model", help="base model (default PLORA_BASE_MODEL)"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="where value_add.{jsonl,md} go"),
    work_dir: Path = typer.Option(Path("out/value_add"), "--work-dir", help="where the cells' plasmids go"),
    monolithic: bool = typer.Option(False, "--monolithic", help="also compare a monolithic plasmid per cell"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="reuse finished cells from value_add.jsonl"),
    guardrails: bool = typer.Option(True, "--guardrails/--no-guardrails", help="stop if a placebo beats the base"),
) -> None:
    """Trained plasmid vs base vs placebos, per (domain, rank, scheme, seed), with paired statistics."""
    from rich.console import Console

    from plora.errors import PloraError
    from plora.experiments.value_add import ValueAddConfig, run_value_add

    cfg = ValueAddConfig(
        domains=_split(domains, "domains"),
        ranks=_ints(ranks, "ranks"),
        schemes=_split(schemes, "schemes"),
        seeds=_ints(seeds, "seeds"),
        samples=samples,
        dev_size=dev_size,
        epochs=epochs,
        base_model=base_model,
        results_dir=results_dir,
        work_dir=work_dir,
        monolithic=monolithic,
        resume=resume,
    )
    outcome = run_value_add(cfg)
    console = Console()
    met = sum(1 for r in outcome.records if r.get("meets_acceptance"))
    cells = sum(1 for r in outcome.records if r["kind"] == "cell")
    console.print(f"{met}/{cells} cells meet the acceptance criteria")
    console.print(f"wrote {outcome.jsonl}, {outcome.markdown}, {outcome.plot}")
    if outcome.guardrail_violations and guardrails:
        raise PloraError("guardrail: " + "; ".join(outcome.guardrail_violations))


def register(app: typer.Typer) -> None:
    app.command("value-add")(value_add)
