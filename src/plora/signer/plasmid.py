"""Signing and verifying plasmid folders: a detached DSSE envelope (``plora.sig.json``) over the canonical manifest,
and optionally an OpenSSF model-signing bundle (``model.sig``, see :mod:`plora.signer.oms`).

    >>> from plora.signer import Keyring, generate_keypair, sign_plasmid, verify_plasmid
    >>> _ = generate_keypair("ed25519", "keys/bob")
    >>> sign_plasmid("out/legal", "keys/bob").signatures    # alice's and bob's, in one envelope
    2
    >>> verify_plasmid("out/legal", Keyring.load(["keys/"]), quorum=2).ok
    True

The payload is :func:`plora.manifest.canonical_bytes` (sorted-key compact JSON of plora.yml), of type
``application/vnd.plora.plasmid.v1+json``. It holds the SHA-256 of the artifact and of adapter_config.json, the base
model's digest, rank, alpha and targets, so no file or field a gate reads can change without breaking every
signature, and a verifier that already hashed the files (fetch, the gate) checks signatures without reading them
again. ``plora sign`` never rewrites plora.yml, except once to drop signatures of the old format (inside
plora.yml, before envelopes), which are refused (SIGNATURE_LEGACY) because they carry no payload type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plora.errors import ManifestError, PloraError, SignatureError
from plora.fsio import folder_lock, read_bounded
from plora.hashing import sha256_bytes, sha256_file
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    MANIFEST_NAME,
    MAX_CONFIG_BYTES,
    OMS_SIGNATURE_NAME,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    UNTRUSTED_MAX_BYTES,
    Manifest,
    canonical_bytes,
    read_manifest,
    write_manifest,
)
from plora.signer.dsse import (
    EnvelopeError,
    Tally,
    VerifyResult,
    check_quorum_arg,
    payload_type,
    read_envelope,
    sign_envelope,
    tally_envelope,
    write_envelope,
)
from plora.signer.keys import Keyring, algorithm_name, fingerprint, load_private_key

PLASMID_PAYLOAD_TYPE = payload_type("plasmid", SCHEMA_VERSION)
SignFormat = Literal["dsse", "oms"]
Reason = tuple[str, str]


def resign_hint(folder: str | os.PathLike[str]) -> str:
    return f"sign it again: plora sign {folder} --key KEY"


def check_files(folder: str | os.PathLike[str], manifest: Manifest) -> list[Reason]:
    """Re-hash the artifact and adapter_config.json against the manifest, and refuse any other ``.safetensors`` file
    beside them (:func:`plora.plasmid.stray_weights`); [] when all holds."""
    from plora.plasmid import artifact_path, stray_weights

    folder = Path(folder)
    try:
        reasons: list[Reason] = [("UNSAFE_FILE", why) for why in stray_weights(folder, manifest.artifact.filename)]
    except OSError as err:
        return [("MANIFEST_MISSING", f"{folder}: cannot list the folder ({err.strerror})")]
    try:
        art = artifact_path(folder, manifest)
        size = art.stat().st_size
    except ManifestError as err:
        return [("ARTIFACT_SHA_MISMATCH", str(err))]
    except OSError:
        return [("ARTIFACT_SHA_MISMATCH", f"artifact {manifest.artifact.filename} is missing")]
    if size != manifest.artifact.size_bytes:
        reasons.append(
            (
                "ARTIFACT_SHA_MISMATCH",
                f"artifact {art.name} is {size} bytes, manifest says {manifest.artifact.size_bytes}",
            )
        )
    else:
        digest = sha256_file(art)
        if digest != manifest.artifact.sha256:
            reasons.append(
                (
                    "ARTIFACT_SHA_MISMATCH",
                    f"hash mismatch for {art.name}: sha256 {digest[:16]}..., manifest says "
                    f"{manifest.artifact.sha256[:16]}...",
                )
            )
    cfg = folder / ADAPTER_CONFIG_NAME
    try:
        cfg_digest = sha256_bytes(read_bounded(cfg, MAX_CONFIG_BYTES, ADAPTER_CONFIG_NAME))
    except OSError as err:
        why = f"{ADAPTER_CONFIG_NAME} is missing" if not cfg.exists() else str(err)
        reasons.append(("CONFIG_SHA_MISMATCH", why))
    else:
        if cfg_digest != manifest.artifact.config_sha256:
            reasons.append(
                (
                    "CONFIG_SHA_MISMATCH",
                    f"hash mismatch for {ADAPTER_CONFIG_NAME}: sha256 {cfg_digest[:16]}..., manifest says "
                    f"{manifest.artifact.config_sha256[:16]}...",
                )
            )
    return reasons


@dataclass(frozen=True)
class SignOutcome:
    path: Path  # the file written: plora.sig.json or model.sig
    fingerprint: str
    algorithm: str
    signatures: int  # signatures in that file now
    stale_dropped: int = 0  # signatures over an older manifest, removed from the envelope
    legacy_removed: int = 0  # old-format signatures removed from plora.yml


def sign_plasmid(
    folder: str | os.PathLike[str], key_path: str | os.PathLike[str], *, format: SignFormat = "dsse",
    replace: bool = False,
) -> SignOutcome:
    """Re-hash the files, refuse if they disagree with the manifest, then add this key's signature.

    ``dsse``: to the envelope ``plora.sig.json`` (created if absent; a previous signature by the same key is
    replaced; signatures over an older manifest are dropped, since they can no longer verify).
    ``oms``: write ``model.sig``, an OpenSSF model-signing bundle over the folder's files (EC keys only). A bundle
    has one signer: another key's ``model.sig`` is replaced only with ``replace=True`` (the same key's always is).
    """
    if format not in ("dsse", "oms"):
        raise SignatureError(f"unknown signature format {format!r}; expected dsse or oms")
    folder = Path(folder)
    private = load_private_key(key_path)
    fp, algo = fingerprint(private.public_key()), algorithm_name(private)
    read_manifest(folder)  # a clear error for a folder that is not a plasmid, before any lock
    # Signers adding to one envelope at once must not lose each other's signature; the files are checked under
    # the lock too, so what is signed is what was checked.
    with folder_lock(folder):  # on the folder itself: no lock file is left in (or signed with) the folder
        manifest = read_manifest(folder)
        problems = check_files(folder, manifest)
        if problems:
            raise SignatureError(f"refusing to sign {folder}: " + "; ".join(msg for _, msg in problems))
        if format == "oms":
            from plora.signer.oms import sign_bundle

            return SignOutcome(sign_bundle(folder, key_path, private, replace=replace), fp, algo, 1)
        path = folder / SIGNATURE_NAME
        payload = canonical_bytes(manifest)
        existing, stale = None, 0
        if path.exists():
            try:
                existing = read_envelope(path)
            except EnvelopeError as err:
                raise SignatureError(f"{err}; remove {path} to start a new envelope") from None
            if existing.payload_type != PLASMID_PAYLOAD_TYPE or existing.payload_bytes != payload:
                stale, existing = len(existing.signatures), None
        envelope = sign_envelope(PLASMID_PAYLOAD_TYPE, payload, private, existing)
        write_envelope(path, envelope)
        legacy = len(manifest.signatures)
        if legacy:  # the one rewrite of plora.yml: canonical bytes exclude this field, so the envelope stays valid
            write_manifest(folder, manifest.model_copy(update={"signatures": ()}))
    return SignOutcome(path, fp, algo, len(envelope.signatures), stale, legacy)


def check_signatures(
    folder: str | os.PathLike[str], keyring: Keyring, quorum: int = 1, *, manifest: Manifest | None = None
) -> VerifyResult:
    """The signatures of a plasmid folder against ``keyring`` (a :class:`plora.signer.Keyring`), without re-hashing
    the artifact: for callers that checked the files against ``manifest`` already (fetch, the gate).

    Counts every distinct trusted key that signed, in ``plora.sig.json`` or in ``model.sig``.
    """
    check_quorum_arg(quorum)
    folder = Path(folder)
    if manifest is None:
        manifest = read_manifest(folder, max_bytes=UNTRUSTED_MAX_BYTES)
    env_path, oms_path = folder / SIGNATURE_NAME, folder / OMS_SIGNATURE_NAME
    has_env, has_oms = env_path.is_file(), oms_path.is_file()
    if not has_env and not has_oms:
        if manifest.signatures:
            return VerifyResult(
                False,
                [
                    (
                        "SIGNATURE_LEGACY",
                        f"plora.yml carries {len(manifest.signatures)} signature(s) of the old format (inside the "
                        f"manifest, no payload type), which are no longer accepted; {resign_hint(folder)}",
                    )
                ],
                quorum=quorum,
            )
        missing = f"no {SIGNATURE_NAME} or {OMS_SIGNATURE_NAME}; {resign_hint(folder)}"
        return VerifyResult(False, [("SIGNATURE_MISSING", missing)], quorum=quorum)
    tally = Tally()
    if manifest.signatures:
        tally.notes.append(f"{len(manifest.signatures)} old-format signature(s) in plora.yml ignored")
    if has_env:
        _tally_plasmid_envelope(env_path, manifest, keyring, tally)
    if has_oms:
        from plora.signer.oms import tally_bundle

        tally_bundle(folder, manifest, keyring, tally)
    return tally.result(quorum)


def _tally_plasmid_envelope(path: Path, manifest: Manifest, keyring: Keyring, tally: Tally) -> None:
    try:
        envelope = read_envelope(path)
    except EnvelopeError as err:
        tally.invalid.append(("ENVELOPE_INVALID", str(err)))
        return
    if envelope.payload_type == PLASMID_PAYLOAD_TYPE and envelope.payload_bytes != canonical_bytes(manifest):
        tally.invalid.append(
            (
                "SIGNATURE_INVALID",
                f"{SIGNATURE_NAME} signs another manifest: plora.yml changed after signing, or the envelope "
                "belongs to another plasmid",
            )
        )
        return
    tally_envelope(envelope, PLASMID_PAYLOAD_TYPE, keyring, tally, source=SIGNATURE_NAME)


def verify_plasmid(folder: str | os.PathLike[str], keyring: Keyring, quorum: int = 1) -> VerifyResult:
    """Re-hash the artifact and adapter_config.json, then check the signatures against ``keyring``."""
    from plora.plasmid import unsafe_files

    folder = Path(folder)
    try:
        unsafe = unsafe_files(folder) if folder.is_dir() else []
    except OSError as err:
        return VerifyResult(False, [("MANIFEST_MISSING", f"{folder}: cannot list the folder ({err.strerror})")],
                            quorum=quorum)
    if unsafe:
        return VerifyResult(False, [("UNSAFE_FILE", why) for why in unsafe], quorum=quorum)
    if not (folder / MANIFEST_NAME).is_file():
        return VerifyResult(False, [("MANIFEST_MISSING", f"{folder}: no {MANIFEST_NAME}")], quorum=quorum)
    try:
        manifest = read_manifest(folder, max_bytes=UNTRUSTED_MAX_BYTES)
    except PloraError as err:
        return VerifyResult(False, [("SCHEMA_INVALID", str(err))], quorum=quorum)
    file_reasons = check_files(folder, manifest)
    sig = check_signatures(folder, keyring, quorum, manifest=manifest)
    reasons = file_reasons + sig.reasons
    return VerifyResult(not reasons, reasons, sig.valid_signers, sig.untrusted_signers, quorum, sig.notes)
