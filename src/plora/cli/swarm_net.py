"""`plora swarm net`: N real agent processes on loopback (filled in by the network issue)."""

from __future__ import annotations

import typer


def register(swarm_app: typer.Typer) -> None:
    pass
