"""Lineage and version of a plasmid, for rollback protection: stamped into plora.yml before it is signed.

    >>> from plora.recall.release import stamp_release
    >>> from plora.manifest import read_manifest, release_of
    >>> release_of(read_manifest("out/medical"))        # a plasmid made before versions: version 0 of its own id
    ('medical', 0)
    >>> done = stamp_release("out/medical", 2, lineage="medical-icd")
    >>> release_of(read_manifest("out/medical")), done.void_signatures
    (('medical-icd', 2), 0)

A receiver keeps, per signer and lineage, the highest version it accepted, and refuses an older one
(VERSION_ROLLBACK: :mod:`plora.recall.store`). The version is part of the manifest, so the signatures cover it: a
rollback attacker cannot raise an old release's number without breaking its signatures. Stamping rewrites
plora.yml (atomically, after checking that the files match it), so signatures over the previous manifest no longer
verify: sign the plasmid again afterwards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from plora.errors import ManifestError, PloraError, first_validation_error
from plora.manifest import SIGNATURE_NAME, canonical_bytes, read_manifest, write_manifest


@dataclass(frozen=True)
class Release:
    lineage: str
    version: int
    void_signatures: int  # signatures in plora.sig.json over the manifest as it was before


def stamp_release(folder: str | os.PathLike[str], version: int, lineage: str | None = None) -> Release:
    """Set ``version`` (and ``lineage``, default: keep it, else the plasmid id) in ``folder``'s plora.yml."""
    from plora.signer.dsse import EnvelopeError, read_envelope
    from plora.signer.plasmid import check_files

    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = check_files(folder, manifest)
    if problems:
        raise PloraError(f"refusing to stamp {folder}: " + "; ".join(msg for _, msg in problems))
    try:
        stamped = manifest.model_validate({**manifest.model_dump(), "version": version,
                                           "lineage": lineage or manifest.lineage or manifest.plasmid_id})
    except ValidationError as err:
        raise ManifestError(first_validation_error(err)) from None
    void = 0
    if canonical_bytes(stamped) != canonical_bytes(manifest):
        try:
            void = len(read_envelope(folder / SIGNATURE_NAME).signatures)
        except EnvelopeError:
            void = 0
        write_manifest(folder, stamped)
    return Release(stamped.lineage or stamped.plasmid_id, version, void)
