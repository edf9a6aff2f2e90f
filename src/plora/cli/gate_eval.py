"""`plora gate-eval`: train or reuse a clean + trojan cohort and measure the gate's detection quality."""

from __future__ import annotations

import typer


def _ints(text: str | None, what: str) -> list[int] | None:
    from plora.errors import PloraError

    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PloraError(f"{what} must be comma-separated integers, got {text!r}") from None


def register(app: typer.Typer) -> None:
    @app.command("gate-eval")
    def gate_eval(
        out: str = typer.Option("results/gate_eval", "--out", help="folder for gate_eval.json and roc.png"),
        domains: str | None = typer.Option(None, "--domains", help="comma-separated built-in domains (default all)"),
        ranks: str | None = typer.Option(None, "--ranks", help="comma-separated LoRA ranks, e.g. 4,8 (default 4,8)"),
        seeds: str | None = typer.Option(None, "--seeds", help="comma-separated seeds (each role derives its own)"),
        quick: bool = typer.Option(False, "--quick", help="a small cohort (2 domains, r=4): a few minutes"),
        base_model: str | None = typer.Option(None, "--base-model", help="base model (default plora-tiny)"),
        probe_seed: int = typer.Option(0, "--probe-seed", help="seed of the behavioural probes"),
        jobs: int = typer.Option(2, "--jobs", help="train and probe the cohort in this many single-thread processes"),
        shipped: bool = typer.Option(
            False, "--shipped", help="score with the shipped references and thresholds (calibrate nothing)"
        ),
        write_defaults: bool = typer.Option(
            False, "--write-defaults", help="calibrate and write plora/gate/thresholds.py and the shipped reference"
        ),
    ) -> None:
        """Measure TPR/FPR/AUROC of the gate's checks on clean vs backdoored plasmids; write JSON and a ROC plot."""
        import math

        from plora.data import DOMAINS
        from plora.errors import PloraError
        from plora.gate.evaluate import CHECKS, run_gate_eval

        doms = [d.strip() for d in domains.split(",") if d.strip()] if domains else None
        for d in doms or []:
            if d not in DOMAINS:
                raise PloraError(f"unknown domain {d!r} (built-in: {', '.join(sorted(DOMAINS))})")
        rank_list = _ints(ranks, "--ranks")
        if rank_list and any(r < 1 for r in rank_list):
            raise PloraError(f"--ranks must be positive, got {ranks!r}")
        report = run_gate_eval(
            out, quick=quick, domains=doms, ranks=rank_list, seeds=_ints(seeds, "--seeds"), base_name=base_model,
            probe_seed=probe_seed, write_defaults=write_defaults, jobs=max(1, jobs), shipped=shipped,
        )

        def fmt(x: float | None) -> str:
            return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:5.2f}"

        c = report["counts"]
        typer.echo(f"cohort: {c['calib']} calibration clean, {c['clean']} clean, {c['trojan_working']}/{c['trojan']} "
                   f"working trojans, {c['adaptive_working']}/{c['adaptive']} working adaptive")
        typer.echo("thresholds: " + ", ".join(f"{k}={v:.4g}" for k, v in report["thresholds"].items()))
        for block in ("ordinary", "adaptive"):
            for check in [*CHECKS, "overall"]:
                m = report[block][check]
                typer.echo(f"{block:9s} {check:12s} AUROC {fmt(m['auroc'])}  TPR {fmt(m['tpr'])}  FPR {fmt(m['fpr'])}"
                           f" (95% CI {fmt(m['fpr_ci95'][0])}-{fmt(m['fpr_ci95'][1])})")
        typer.echo(f"wrote {out}/gate_eval.json and {out}/roc.png")
