"""`plora swarm net`: N real agent processes on loopback, gossiping plasmids push-pull over gRPC.

    plora swarm net --agents 8 --rounds 10 --graph_p 0.25 --security on --trojan_rate 0.3 --seed 42
"""

from __future__ import annotations

import typer

from plora.cli.options import option
from plora.swarm.config import NetConfig


def net(
    agents: int = option(NetConfig, "agents"),
    rounds: int = option(NetConfig, "rounds"),
    graph_p: float = option(NetConfig, "graph_p"),
    security: str = option(NetConfig, "security", on_off=True),
    trojan_rate: float = option(NetConfig, "trojan_rate"),
    seed: int = option(NetConfig, "seed"),
    domains: str = option(NetConfig, "domains"),
    allowed_targets: str | None = option(NetConfig, "allowed_targets"),
    allowed_ranks: str | None = option(NetConfig, "allowed_ranks"),
    signatures: str | None = option(NetConfig, "signatures", on_off=True),
    trusted_pubkeys: str = option(NetConfig, "trusted_pubkeys"),
    policy_file: str | None = option(NetConfig, "policy_file"),
    tau_trigger: float | None = option(NetConfig, "tau_trigger"),
    tau_norm_z: float | None = option(NetConfig, "tau_norm_z"),
    tau_clean_delta: float | None = option(NetConfig, "tau_clean_delta"),
    report_dir: str = option(NetConfig, "report_dir"),
    pool_dir: str | None = option(NetConfig, "pool_dir"),
    max_per_contact: int = option(NetConfig, "max_per_contact"),
    work_dir: str | None = option(NetConfig, "work_dir"),
    revoke_at: int | None = option(NetConfig, "revoke_at"),
    peer_scoring: str | None = option(NetConfig, "peer_scoring", on_off=True),
    live_model: str = option(NetConfig, "live_model", on_off=True),
) -> None:
    """Start N `plora agent` processes on 127.0.0.1, gossip push-pull over gRPC, write a Swarm Sim v2 report."""
    given = {k: v for k, v in locals().items() if v is not None}  # unset gate flags leave the policy alone
    from plora.outputs import check_report_dir
    from plora.swarm.config import make_config
    from plora.swarm.net import run_swarm_net

    cfg = make_config(NetConfig, **given)
    check_report_dir(cfg.report_dir)
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
    from plora.swarm.sim import recall_lines

    for line in recall_lines(final.get("recall")):
        typer.echo(line)
    live = (final.get("recall") or {}).get("live_weights")
    if live:
        typer.echo(f"  live models: {live['unloaded']} revoked plasmid(s) unloaded, weights equal to the pre-injection "
                   f"ones bit for bit: {live['all_equal']}")
    typer.echo(f"report: {meta['timings']['report_path']}")


def register(swarm_app: typer.Typer) -> None:
    swarm_app.command("net")(net)
