"""Entry point of the ``plora`` command (also ``python -m plora``).

Command modules import only typer at top level; each command imports the library it needs when it
runs, so ``plora --help`` stays fast. A :class:`plora.errors.PloraError` becomes one line on stderr
and exit code 2; set PLORA_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from plora.cli import base, experiments, gate, gate_eval, importer, network, recall, runtime, swarm, train, trust
from plora.cli.options import plain_app
from plora.errors import PloraError, Terminated

app = plain_app(
    name="plora",
    help="LoRA plasmids: train, sign, share, screen and hot-load small LoRA adapters.",
    no_args_is_help=True,
)

for module in (base, train, importer, trust, recall, gate, gate_eval, runtime, network, swarm, experiments):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="plora")


def run_standalone(command: Callable[..., Any], argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run one command function as its own program (the seed's ``python -m scripts.X`` shims)."""
    single = plain_app()
    single.command()(command)
    run_app(single, argv, prog_name=prog_name)


def run_app(typer_app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run a typer app so that every error is one line on stderr: ``error: ...``, exit 2 for bad input (a
    PloraError, or a usage error such as a missing or unknown option), 1 for anything unexpected, 130 on Ctrl-C, 143
    on a SIGTERM that stopped a worker pool."""
    try:
        code = typer_app(args=argv, prog_name=prog_name, standalone_mode=False)
    except PloraError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Terminated:  # SIGTERM during a worker pool (plora.executor): workers already stopped
        print("error: terminated", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the user gets one line; PLORA_DEBUG shows the trace
        if os.environ.get("PLORA_DEBUG"):
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # `plora` or `plora swarm` alone: the help, as click does
            print(err.format_message())  # type: ignore[attr-defined]
            sys.exit(2)
        if hasattr(err, "format_message") and hasattr(err, "exit_code"):  # click's UsageError, BadParameter, ...
            ctx = getattr(err, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            print(f"error: {err.format_message().rstrip('.')}{hint}", file=sys.stderr)
            sys.exit(err.exit_code)
        if type(err).__name__ == "Abort":
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    if code == 130:
        print("error: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
