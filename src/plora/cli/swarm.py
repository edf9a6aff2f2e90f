"""`plora swarm sim` (in-process Swarm Sim v2) and `plora swarm net` (networked agent processes)."""

from __future__ import annotations

import typer

from plora.cli import swarm_net

swarm_app = typer.Typer(help="Gossip plasmids across a swarm of agents.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    swarm_net.register(swarm_app)
    app.add_typer(swarm_app, name="swarm")
