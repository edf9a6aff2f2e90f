"""`plora swarm net`: N real agent processes on loopback, gossiping plasmids push-pull over gRPC.

    plora swarm net --agents 8 --rounds 10 --graph_p 0.25 --security on --trojan_rate 0.3 --seed 42
"""

from __future__ import annotations

import typer


def net(
    agents: int = typer.Option(8, "--agents", help="agent processes to start"),
    rounds: int = typer.Option(10, "--rounds", help="maximum gossip rounds (stops early once nothing can move)"),
    graph_p: float = typer.Option(0.25, "--graph_p", "--graph-p", help="Erdős–Rényi edge probability"),
    security: str = typer.Option("on", "--security", help="on: every agent verifies and gates each fetch"),
    trojan_rate: float = typer.Option(0.3, "--trojan_rate", "--trojan-rate", help="share of trojan agents"),
    seed: int = typer.Option(42, "--seed", help="the same seed as `plora swarm sim` gives the same overlay and roles"),
    domains: str = typer.Option("arithmetic,legal,medical,science", "--domains"),
    allowed_targets: str = typer.Option("attention", "--allowed_targets", "--allowed-targets", help="attention|all"),
    allowed_ranks: str = typer.Option("4,8,16", "--allowed_ranks", "--allowed-ranks"),
    signatures: str = typer.Option("off", "--signatures", help="on: require a trusted signature (pool: swarm key)"),
    trusted_pubkeys: str = typer.Option("", "--trusted_pubkeys", "--trusted-pubkeys", help="p1,p2 (default: swarm)"),
    policy_file: str = typer.Option(None, "--policy_file", "--policy-file", help="gate policy JSON"),
    tau_trigger: float = typer.Option(None, "--tau_trigger", "--tau-trigger"),
    tau_norm_z: float = typer.Option(None, "--tau_norm_z", "--tau-norm-z"),
    tau_clean_delta: float = typer.Option(None, "--tau_clean_delta", "--tau-clean-delta"),
    report_dir: str = typer.Option("results", "--report_dir", "--report-dir", help="where the report goes"),
    pool_dir: str = typer.Option(None, "--pool_dir", "--pool-dir", help="plasmid folders + labels.json to use"),
    max_per_contact: int = typer.Option(8, "--max_per_contact", "--max-per-contact", min=1),
    work_dir: str = typer.Option(None, "--work_dir", "--work-dir", help="keep agents' stores and logs here"),
) -> None:
    """Start N `plora agent` processes on 127.0.0.1, gossip push-pull over gRPC, write a Swarm Sim v2 report."""
    from plora.errors import PloraError
    from plora.swarm.net import NetConfig, run_swarm_net

    for flag, value in (("--security", security), ("--signatures", signatures)):
        if value not in {"on", "off"}:
            raise PloraError(f"{flag} must be on or off, got {value!r}")
    try:
        ranks = tuple(int(r) for r in allowed_ranks.split(",") if r.strip())
    except ValueError:
        raise PloraError(f"--allowed_ranks must be integers like 4,8,16, got {allowed_ranks!r}") from None
    cfg = NetConfig(agents=agents, rounds=rounds, graph_p=graph_p, security=security == "on",
                    signatures=signatures == "on",
                    trusted_pubkeys=tuple(k.strip() for k in trusted_pubkeys.split(",") if k.strip()),
                    allowed_targets=allowed_targets, allowed_ranks=ranks, tau_trigger=tau_trigger,
                    tau_norm_z=tau_norm_z, tau_clean_delta=tau_clean_delta, trojan_rate=trojan_rate, seed=seed,
                    domains=tuple(d.strip() for d in domains.split(",") if d.strip()), report_dir=report_dir,
                    policy_file=policy_file, pool_dir=pool_dir, max_per_contact=max_per_contact, work_dir=work_dir)
    report = run_swarm_net(cfg)
    meta, final = report["meta"], report["final"]
    g, gate = meta["graph"], final["gate"]
    typer.echo(f"swarm net: {meta['agents']} agent processes ({meta['trojan_agents']} trojan), {g['edges']} edges, "
               f"{final['rounds_run']} rounds{' (quiescent)' if final['quiescent'] else ''}, security {security}, "
               f"{meta['timings']['wall_s']:.1f} s")
    for d, c in final["coverage"].items():
        full = final["rounds_to_full_coverage"][d]
        reach = final["coverage_reachable"][d]
        typer.echo(f"  {d:<11} coverage {c:.2f} (reachable {reach if reach is None else f'{reach:.2f}'}), "
                   f"full after {full if full is not None else '-'} rounds")
    typer.echo(f"  trojan prevalence {final['trojan_prevalence']:.2f}; gate: accepted clean {gate['accepted_clean']} "
               f"trojan {gate['accepted_trojan']}, rejected clean {gate['rejected_clean']} trojan "
               f"{gate['rejected_trojan']} (FN {gate['false_negatives']}, FP {gate['false_positives']}) "
               f"{gate['rejection_reasons'] or ''}")
    died = meta["extra"]["agents_died"]
    typer.echo(f"  bytes on wire {final['bytes_on_wire']:,}, accepted offers {final['accepted_offers']}"
               + (f", agents died: {died}" if died else ""))
    typer.echo(f"report: {meta['timings']['report_path']}")


def register(swarm_app: typer.Typer) -> None:
    swarm_app.command("net")(net)
