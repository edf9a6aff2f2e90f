"""Errors a user can act on. The CLI prints them as one line and exits non-zero, never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class PloraError(Exception):
    """Base for every error whose message is meant for the user."""


class Terminated(BaseException):
    """SIGTERM while :mod:`plora.executor` runs a worker pool: the workers are stopped as on Ctrl-C, and the CLI
    prints ``error: terminated`` and exits 143. A BaseException, like KeyboardInterrupt, so ``except Exception``
    does not swallow it (nor typer, which would turn a KeyboardInterrupt into exit 130)."""


class ManifestError(PloraError):
    """A plora.yml that does not parse, or breaks the schema."""


class DataError(PloraError):
    """An unknown domain, an unreadable dataset file, an empty split."""


class ModelError(PloraError):
    """A base model that cannot be resolved or loaded."""


class SignatureError(PloraError):
    """A bad key, a signature that does not verify, a quorum not met."""


class LoaderError(PloraError):
    """A plasmid that does not fit the live model, or a blown latency budget."""


class TransferError(PloraError):
    """A network offer/fetch that failed or was refused."""


def first_validation_error(err: ValidationError, root: str = "") -> str:
    """``loc: msg`` of a pydantic ValidationError's first error, one line; ``root`` names an empty location."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or root
    return f"{loc}: {first['msg']}"
