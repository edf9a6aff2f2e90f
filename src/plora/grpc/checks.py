"""Checks a fetch runs on a staged plasmid folder before it is moved into place: signatures, the gate, revocations.

A check takes the staged folder and returns the reasons it is refused (``CODE: message`` lines); [] accepts it.
:func:`plora.grpc.client.fetch` runs its checks in order and stops at the first refusal.

    >>> from plora.grpc.checks import signature_check
    >>> check = signature_check(["keys/alice.pub"])     # gate_check(policy) screens with the gate the same way
    >>> check("out/legal")                              # signed by alice
    []
    >>> check("out/medical")                            # unsigned
    ['SIGNATURE_MISSING: ...']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from plora.errors import ManifestError
from plora.manifest import MANIFEST_NAME, loads_manifest

if TYPE_CHECKING:
    from plora.gate.policy import Policy

Check = Callable[[Path], list[str]]  # reasons a staged plasmid folder is refused; [] accepts it


def format_reason(reason: object) -> str:
    """``(code, message)`` pairs (plora.signer, plora.gate) as ``CODE: message``; other objects as str()."""
    if isinstance(reason, tuple) and len(reason) == 2:
        return f"{reason[0]}: {reason[1]}"
    code, message = getattr(reason, "code", None), getattr(reason, "message", None)
    return f"{code}: {message}" if code is not None and message is not None else str(reason)


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def signature_check(trusted_keys: Sequence[str | os.PathLike[str]], quorum: int = 1) -> Check:
    """Signatures by at least ``quorum`` distinct trusted keys (plora.signer), from the detached signature files.

    Inside :func:`plora.grpc.client.fetch` the staged artifact and adapter_config were hashed as they were received
    and matched the manifest, so this checks the signatures over the staged manifest without hashing the artifact a
    second time.
    """
    from plora.signer import Keyring, check_signatures
    from plora.signer.dsse import check_quorum_arg

    keyring = Keyring.load([str(p) for p in trusted_keys])
    check_quorum_arg(quorum, keyring)

    def check(folder: Path) -> list[str]:
        folder = Path(folder)
        try:
            manifest = loads_manifest((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ManifestError) as err:
            return [f"SCHEMA_INVALID: {err}"]
        verdict = check_signatures(folder, keyring, quorum, manifest=manifest)
        return [] if verdict.ok else [format_reason(r) for r in verdict.reasons] or ["QUORUM_NOT_MET: not verified"]

    return check


def gate_check(policy: Policy, progress: Callable[..., None] | None = None) -> Check:
    """The security gate (plora.gate.screen) under ``policy``; ``progress`` sees each stage (see screen)."""
    from plora.gate import screen

    def check(folder: Path) -> list[str]:
        verdict = screen(folder, policy, progress=progress)
        return [] if verdict.accepted else [format_reason(r) for r in verdict.reasons] or ["GATE: rejected"]

    return check
