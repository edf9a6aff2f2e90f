"""`plora swarm sweep`: a grid of Swarm Sim v2 runs on local processes or a Ray cluster, JSONL rows, phase diagrams.

    plora swarm sweep --agents 100000 --graph_p 0.0001 --trojan_rate 0,0.1,0.2,0.3,0.4 \\
        --gate_tpr 0.5,0.75,0.9,1 --seeds 0,1,2 --jobs 2 --out results/sweep
    plora swarm sweep ... --ray-address auto            # the same grid on the Ray cluster started on this machine

Library: :func:`plora.swarm.sweep.run_sweep`.
"""

from __future__ import annotations

import typer

from plora.cli.options import option
from plora.executor import ExecutorConfig
from plora.swarm.sweep import SweepConfig


def sweep(
    agents: str = option(SweepConfig, "agents"),
    graph: str = option(SweepConfig, "graph"),
    graph_p: str = option(SweepConfig, "graph_p"),
    ws_k: str = option(SweepConfig, "ws_k"),
    ws_beta: str = option(SweepConfig, "ws_beta"),
    ba_m: str = option(SweepConfig, "ba_m"),
    trojan_rate: str = option(SweepConfig, "trojan_rate"),
    sources: str = option(SweepConfig, "sources"),
    max_fetch_per_contact: str = option(SweepConfig, "max_fetch_per_contact"),
    tau_trigger: str = option(SweepConfig, "tau_trigger"),
    tau_norm_z: str = option(SweepConfig, "tau_norm_z"),
    tau_clean_delta: str = option(SweepConfig, "tau_clean_delta"),
    gate_tpr: str = option(SweepConfig, "gate_tpr"),
    gate_fpr: str = option(SweepConfig, "gate_fpr"),
    gate_report: str | None = option(SweepConfig, "gate_report"),
    gate_plasmids: int | None = option(SweepConfig, "gate_plasmids"),
    seeds: str = option(SweepConfig, "seeds"),
    rounds: int = option(SweepConfig, "rounds"),
    domains: str = option(SweepConfig, "domains"),
    security: str = option(SweepConfig, "security", on_off=True),
    policy_file: str | None = option(SweepConfig, "policy_file"),
    pool_dir: str | None = option(SweepConfig, "pool_dir"),
    out: str = option(SweepConfig, "out"),
    resume: str = option(SweepConfig, "resume", on_off=True),
    jobs: int = option(ExecutorConfig, "jobs"),
    ray_address: str | None = option(ExecutorConfig, "ray_address"),
) -> None:
    """Run every combination of the listed values (comma-separated) as one Swarm Sim v2 run; rows go to
    OUT/sweep.jsonl as runs finish (a rerun skips finished runs), then OUT/sweep.json and the phase PNGs."""
    given = {k: v for k, v in locals().items() if v is not None}
    from plora.errors import PloraError
    from plora.executor import backend_of
    from plora.swarm.config import make_config
    from plora.swarm.sweep import run_sweep

    executor = make_config(ExecutorConfig, jobs=given.pop("jobs"), ray_address=given.pop("ray_address", None))
    cfg = make_config(SweepConfig, **given)
    outcome = run_sweep(cfg, executor)
    rows = outcome.rows
    typer.echo(
        f"swarm sweep: {len(rows)} runs in the grid have rows ({outcome.ran} ran now on "
        f"{backend_of(executor)}, {outcome.reused} reused), {outcome.wall_s:.1f} s"
    )
    if rows:
        worst = max(rows, key=lambda r: r["final"]["trojan_prevalence"])
        typer.echo(
            f"  highest final trojan prevalence {worst['final']['trojan_prevalence']:.3f} at trojan rate "
            f"{worst['config']['trojan_rate']:g}, detection rate {worst['gate']['detection_rate']}"
        )
    typer.echo(f"rows: {outcome.rows_path}\nsummary: {outcome.summary_path}")
    for png in outcome.phase_pngs:
        typer.echo(f"phase diagram: {png}")
    if outcome.failures:
        first = outcome.failures[0]
        raise PloraError(
            f"{len(outcome.failures)} sweep runs failed twice (all listed in {outcome.summary_path}); "
            f"first: {first['error']}"
        )


def register(swarm_app: typer.Typer) -> None:
    swarm_app.command("sweep")(sweep)
