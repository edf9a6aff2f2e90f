"""`plora gate-eval` (filled in by the trust-chain issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
