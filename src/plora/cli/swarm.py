"""`plora swarm sim` (in-process Swarm Sim v2), `plora swarm summarise`, and `plora swarm net` (networked agents).

    plora swarm sim --agents 6 --rounds 5 --graph_p 0.25 --security on --trojan_rate 0.3
    python -m swarm_v2 --agents 6 --rounds 5 --graph_p 0.25 --security on --trojan_rate 0.3     (the same command)
    plora swarm summarise --reports results --out results/summary_v2.json
"""

from __future__ import annotations

import sys

import typer

from plora.cli import swarm_net

swarm_app = typer.Typer(help="Gossip plasmids across a swarm of agents.", no_args_is_help=True)


def _on_off(value: str, flag: str) -> bool:
    from plora.errors import PloraError

    v = value.strip().lower()
    if v not in {"on", "off"}:
        raise PloraError(f"{flag} must be on or off, got {value!r}")
    return v == "on"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def sim(
    agents: int = typer.Option(6, "--agents", help="number of agents"),
    rounds: int = typer.Option(50, "--rounds", help="maximum rounds (stops earlier once nothing can change)"),
    graph_p: float = typer.Option(0.25, "--graph_p", "--graph-p", help="ER edge probability; degree d: d/(N-1)"),
    security: str = typer.Option("on", "--security", help="on|off: screen every received plasmid with the gate"),
    allowed_targets: str = typer.Option("attention", "--allowed_targets", "--allowed-targets", help="attention|all"),
    allowed_ranks: str = typer.Option("4,8,16", "--allowed_ranks", "--allowed-ranks", help="ranks the gate allows"),
    signatures: str = typer.Option("off", "--signatures", help="on|off: require a trusted signature"),
    trusted_pubkeys: str = typer.Option(
        "", "--trusted_pubkeys", "--trusted-pubkeys", help="p1,p2: trusted public keys (default: the pool's swarm key)"
    ),
    trojan_rate: float = typer.Option(0.0, "--trojan_rate", "--trojan-rate", help="share of agents holding a trojan"),
    policy_file: str = typer.Option(None, "--policy_file", "--policy-file", help="gate policy JSON"),
    tau_trigger: float = typer.Option(None, "--tau_trigger", "--tau-trigger", help="override the policy's tau"),
    tau_norm_z: float = typer.Option(None, "--tau_norm_z", "--tau-norm-z", help="override the policy's tau"),
    tau_clean_delta: float = typer.Option(None, "--tau_clean_delta", "--tau-clean-delta", help="override the tau"),
    seed: int = typer.Option(0, "--seed", help="seeds the graph, roles, sources and every contact"),
    graph: str = typer.Option("er", "--graph", help="er | ws | ba"),
    ws_k: int = typer.Option(4, "--ws_k", "--ws-k", help="WS ring degree (even)"),
    ws_beta: float = typer.Option(0.1, "--ws_beta", "--ws-beta", help="WS rewiring probability"),
    ba_m: int = typer.Option(2, "--ba_m", "--ba-m", help="BA edges per arriving agent"),
    domains: str = typer.Option(
        "arithmetic,legal,medical,science", "--domains", help="comma-separated plasmid domains"
    ),
    sources: int = typer.Option(None, "--sources", help="K honest sources per domain (default: agent i holds i mod D)"),
    max_fetch_per_contact: int = typer.Option(
        None, "--max_fetch_per_contact", "--max-fetch-per-contact", help="cap on plasmids fetched per contact side"
    ),
    report_dir: str = typer.Option("results", "--report_dir", "--report-dir", help="folder for the JSON + PNG"),
    pool_dir: str = typer.Option(
        None, "--pool_dir", "--pool-dir", help="plasmid folder with labels.json (default: the cached trained pool)"
    ),
) -> None:
    """Swarm Sim v2: synchronous push-pull gossip of real plasmids, each screened by the receiver's gate."""
    from plora.swarm import format_summary, make_config, run_simulation

    cfg = make_config(
        agents=agents, rounds=rounds, graph_p=graph_p, security=_on_off(security, "--security"),
        allowed_targets=allowed_targets, allowed_ranks=tuple(int(r) for r in _ranks(allowed_ranks)),
        signatures=_on_off(signatures, "--signatures"), trusted_pubkeys=_csv(trusted_pubkeys),
        trojan_rate=trojan_rate, policy_file=policy_file, tau_trigger=tau_trigger, tau_norm_z=tau_norm_z,
        tau_clean_delta=tau_clean_delta, seed=seed, graph=graph, ws_k=ws_k, ws_beta=ws_beta, ba_m=ba_m,
        domains=_csv(domains), sources=sources, max_fetch_per_contact=max_fetch_per_contact, report_dir=report_dir,
        pool_dir=pool_dir,
    )
    report = run_simulation(cfg, progress=True)
    typer.echo(format_summary(report))


def _ranks(value: str) -> tuple[str, ...]:
    from plora.errors import PloraError

    parts = _csv(value)
    if not parts or not all(p.isdigit() for p in parts):
        raise PloraError(f"--allowed_ranks must be comma-separated integers, got {value!r}")
    return parts


def summarise(
    reports: str = typer.Option("results", "--reports", help="folder searched (recursively) for report JSON"),
    out: str = typer.Option(None, "--out", help="summary JSON to write (default: <reports>/summary_v2.json)"),
) -> None:
    """Summarise every swarm report (sim or net) under a folder: per-run rows, aggregates, a table."""
    from plora.swarm.summary import format_table, summarise_reports, write_summary

    summary = summarise_reports(reports)
    path = write_summary(summary, out or f"{reports}/summary_v2.json")
    typer.echo(format_table(summary))
    typer.echo(f"summary: {path}")


def register(app: typer.Typer) -> None:
    swarm_app.command("sim")(sim)
    swarm_app.command("summarise")(summarise)
    swarm_net.register(swarm_app)
    app.add_typer(swarm_app, name="swarm")


def run_standalone(command: str, argv: list[str] | None = None) -> None:
    """Run one command as its own program (the seed's ``python -m swarm_v2`` and ``python -m scripts.evaluate_v2``),
    with plora's error handling: a PloraError is one line on stderr and exit code 2."""
    from plora.cli.main import main as plora_main

    plora_main(["swarm", command, *(sys.argv[1:] if argv is None else argv)])
