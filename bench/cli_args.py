"""Command-line parsing for the bench scripts: a bad value is one line on stderr and exit 2, before any heavy import.

    from cli_args import Parser, positive_int
    ap = Parser(description="...")
    ap.add_argument("--repeats", type=positive_int, default=5)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

BUILTIN_BASES = ("plora-tiny", "smollm2-135m")


class Parser(argparse.ArgumentParser):
    """argparse, but an error is ``prog: error: message`` on one line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def positive_int_list(text: str, parse: Callable[[str], int] = int) -> list[int]:
    """Comma-separated whole numbers >= 1 (``parse`` reads one: ``int``, or ``lambda s: int(float(s))`` for 1e5)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    out = []
    for part in parts:
        try:
            value = parse(part)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {part!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {part!r}")
        out.append(value)
    return out


def model_list(extra: Iterable[str] = ()) -> Callable[[str], list[str]]:
    """A type for ``--models``: comma-separated names, each a built-in base, one of ``extra`` or a local folder."""
    known = (*BUILTIN_BASES, *extra)

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentTypeError("expected at least one model name")
        for name in names:
            if name.lower() not in known and not Path(name).expanduser().is_dir():
                raise argparse.ArgumentTypeError(
                    f"unknown model {name!r}: expected {', '.join(known)} or a local model folder")
        return names

    return parse


def positive_int_csv(text: str) -> str:
    """Comma-separated whole numbers >= 1, checked and handed on as the same text (for options parsed further on)."""
    return ",".join(str(v) for v in positive_int_list(text))
