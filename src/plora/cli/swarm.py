"""`plora swarm sim` (in-process Swarm Sim v2), `plora swarm summarise`, and `plora swarm net` (networked agents).

    plora swarm sim --agents 6 --rounds 5 --graph_p 0.25 --security on --trojan_rate 0.3
    python -m swarm_v2 --agents 6 --rounds 5 --graph_p 0.25 --security on --trojan_rate 0.3     (the same command)
    plora swarm summarise --reports results --out results/summary_v2.json
    plora swarm sweep --agents 100000 --graph_p 0.0001 --trojan_rate 0,0.2 --gate_tpr 0.5,0.9 --seeds 0,1
"""

from __future__ import annotations

import typer

from plora.cli import swarm_net, swarm_sweep
from plora.cli.options import option, plain_app
from plora.swarm.config import SimConfig

swarm_app = plain_app(help="Gossip plasmids across a swarm of agents.", no_args_is_help=True)


def sim(
    agents: int = option(SimConfig, "agents"),
    rounds: int = option(SimConfig, "rounds"),
    graph_p: float = option(SimConfig, "graph_p"),
    security: str = option(SimConfig, "security", on_off=True),
    allowed_targets: str | None = option(SimConfig, "allowed_targets"),
    allowed_ranks: str | None = option(SimConfig, "allowed_ranks"),
    signatures: str | None = option(SimConfig, "signatures", on_off=True),
    trusted_pubkeys: str = option(SimConfig, "trusted_pubkeys"),
    trojan_rate: float = option(SimConfig, "trojan_rate"),
    policy_file: str | None = option(SimConfig, "policy_file"),
    tau_trigger: float | None = option(SimConfig, "tau_trigger"),
    tau_norm_z: float | None = option(SimConfig, "tau_norm_z"),
    tau_clean_delta: float | None = option(SimConfig, "tau_clean_delta"),
    seed: int = option(SimConfig, "seed"),
    graph: str = option(SimConfig, "graph"),
    ws_k: int = option(SimConfig, "ws_k"),
    ws_beta: float = option(SimConfig, "ws_beta"),
    ba_m: int = option(SimConfig, "ba_m"),
    domains: str = option(SimConfig, "domains"),
    sources: int | None = option(SimConfig, "sources"),
    max_fetch_per_contact: int | None = option(SimConfig, "max_fetch_per_contact"),
    gate_tpr: float | None = option(SimConfig, "gate_tpr"),
    gate_fpr: float | None = option(SimConfig, "gate_fpr"),
    gate_plasmids: int | None = option(SimConfig, "gate_plasmids"),
    revoke_at: int | None = option(SimConfig, "revoke_at"),
    peer_scoring: str | None = option(SimConfig, "peer_scoring", on_off=True),
    compare_peer_scoring: str = option(SimConfig, "compare_peer_scoring", on_off=True),
    report_dir: str = option(SimConfig, "report_dir"),
    pool_dir: str | None = option(SimConfig, "pool_dir"),
) -> None:
    """Swarm Sim v2: synchronous push-pull gossip of real plasmids, each screened by the receiver's gate."""
    given = {k: v for k, v in locals().items() if v is not None}  # unset gate flags leave the policy alone
    from plora.swarm import format_summary, make_config, run_simulation

    cfg = make_config(SimConfig, **given)
    report = run_simulation(cfg, progress=True)
    typer.echo(format_summary(report))


def summarise(
    reports: str = typer.Option("results", "--reports", help="folder searched (recursively) for report JSON"),
    out: str = typer.Option(None, "--out", help="summary JSON to write (default: <reports>/summary_v2.json)"),
) -> None:
    """Summarise every swarm report (sim or net) under a folder: per-run rows, aggregates, a table."""
    from plora.outputs import check_new_file
    from plora.swarm.summary import format_table, summarise_reports, write_summary

    target = out or f"{reports}/summary_v2.json"
    check_new_file(target)
    summary = summarise_reports(reports, exclude=target)
    path = write_summary(summary, target)
    typer.echo(format_table(summary))
    typer.echo(f"summary: {path}")


def register(app: typer.Typer) -> None:
    swarm_app.command("sim")(sim)
    swarm_app.command("summarise")(summarise)
    swarm_net.register(swarm_app)
    swarm_sweep.register(swarm_app)
    app.add_typer(swarm_app, name="swarm")
