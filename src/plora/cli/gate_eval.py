"""`plora gate-eval`: train or reuse a family-split cohort, calibrate on its development part, report on the rest.

    plora gate-eval --quick                                  # a few minutes: a small cohort, the protocol end to end
    plora gate-eval --seed 1 --jobs 2                        # the full cohort (184 plasmids)
    plora gate-eval --seed 2 --shipped                       # the installed/shipped calibration on a new cohort
    plora gate-eval --base-model smollm2-135m --cohort real-model --out results/gate_eval_smollm2
    plora calibration install results/gate_eval/calibration.json

Library: :func:`plora.experiments.gate_eval.evaluate.run_gate_eval`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from plora.cli.options import option
from plora.cli.trust import user_errors
from plora.executor import ExecutorConfig
from plora.swarm.config import make_config


def gate_eval(
    out: Path = typer.Option(Path("results/gate_eval"), "--out", help="folder of every output (nothing else written)"),
    seed: int = typer.Option(1, "--seed", help="cohort draw: triggers, targets, recipes and tasks of every member"),
    quick: bool = typer.Option(False, "--quick", help="a small cohort (24 plasmids): the protocol end to end"),
    cohort: str = typer.Option("default", "--cohort", help="default (184 plasmids), quick (24) or real-model (50, at "
                               "most 256 items each: for a base like smollm2-135m)"),
    base_model: str | None = typer.Option(None, "--base-model", "--base_model", help="default PLORA_BASE_MODEL"),
    probe_seed: int = typer.Option(0, "--probe-seed", "--probe_seed",
                                   help="seed of the behavioural probe (--calibration/--shipped: the calibration's)"),
    jobs: int = option(ExecutorConfig, "jobs", default=2),
    ray_address: str | None = option(ExecutorConfig, "ray_address", "--ray-address", "--ray_address"),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="score with this calibration file instead of choosing one (all held out)"
    ),
    shipped: bool = typer.Option(
        False, "--shipped", help="score with the calibration installed or shipped for the base (all held out)"
    ),
) -> None:
    """Measure the gate on a cohort of clean and backdoored plasmids: per family, on families never tuned on."""
    with user_errors():
        from plora.experiments.gate_eval.evaluate import run_gate_eval

        executor = make_config(ExecutorConfig, jobs=jobs, ray_address=ray_address)
        report = run_gate_eval(out, quick=quick, cohort=cohort, seed=seed, base_name=base_model, probe_seed=probe_seed,
                               executor=executor, calibration=calibration, use_installed=shipped)
    cal = report["calibration"]
    typer.echo(f"calibration: {cal['source']}; statistic {cal['statistic']}; thresholds "
               + ", ".join(f"{k}={v:.4g}" for k, v in cal["thresholds"].items()))
    for part in ("development", "held_out"):
        block = report.get(part)
        if block:
            o = block["overall"]
            typer.echo(f"{part:12s} working trojans stopped {o['tp']}/{o['n_pos']}, "
                       f"clean refused {o['fp']}/{o['n_neg']}, AUROC {o['auroc']:.3f}")
    d = report["train_defaults"]
    typer.echo(f"plora train defaults (held out): {d['rejected']}/{d['clean']} clean refused")
    written = "gate_eval.json, gate_eval.md, roc.png, families.png"
    if cal["source"].startswith("chosen"):
        written += f", calibration.json (install it with: plora calibration install {out / 'calibration.json'})"
    typer.echo(f"wrote {written} in {out}")


def register(app: typer.Typer) -> None:
    app.command("gate-eval")(gate_eval)
