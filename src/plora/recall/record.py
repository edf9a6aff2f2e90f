"""The signed revocation record: what is revoked, why, when and by whom, in a DSSE envelope of its own payload type.

    >>> from plora.recall.record import issue_revocation, verify_revocation, artifact_target
    >>> from plora.signer import Keyring
    >>> env = issue_revocation(artifact_target("out/legal"), "trigger found in the field", "keys/alice",
    ...                        issuer="alice", out="revocations/legal.json")
    >>> env.payload_type
    'application/vnd.plora.revocation.v1+json'
    >>> check = verify_revocation("revocations/legal.json", Keyring.load(["keys/alice.pub"]))
    >>> check.ok, check.record.target.kind, check.record.reason
    (True, 'artifact', 'trigger found in the field')
    >>> verify_revocation("out/legal/plora.sig.json", Keyring.load(["keys/alice.pub"])).codes   # a plasmid's
    ['PAYLOAD_TYPE_MISMATCH']

The record (``schema_version: 1``; unknown fields, wrong types, duplicate JSON keys and NaN are refused)::

    {"schema_version": 1,
     "target": {"kind": "artifact", "sha256": "<artifact SHA-256>", "plasmid_id": "legal"}   # or
               {"kind": "signer", "keyid": "<fingerprint of the revoked key>"},
     "reason": "why, in words", "issued_at": "2026-11-27T12:00:00Z", "issuer": "who issued it"}

An ``artifact`` target revokes one plasmid by its artifact's SHA-256, under any id (``plasmid_id`` is a hint for
readers, never used to match); a ``signer`` target revokes every plasmid whose ``plora.sig.json`` lists a signature by
that key. The payload is the record's canonical bytes (sorted-key compact JSON), of type
``application/vnd.plora.revocation.v1+json``: through DSSE's PAE a revocation's signature never verifies as a
plasmid's nor the reverse (PAYLOAD_TYPE_MISMATCH). A revocation's id is the SHA-256 of its payload, so the same
record signed by more keys keeps its id: receivers deduplicate by it. Quorum is the signer package's: at least K
distinct trusted keys (:func:`plora.signer.verify_envelope`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plora.errors import PloraError, first_validation_error
from plora.manifest import Identifier, Sha256
from plora.signer.dsse import (
    Envelope,
    EnvelopeError,
    Tally,
    check_quorum_arg,
    loads_envelope,
    payload_type,
    sign_envelope,
    tally_envelope,
    write_envelope,
)
from plora.signer.keys import Keyring, PrivateKey, fingerprint, load_private_key, load_public_key
from plora.strictjson import loads_strict

SCHEMA_VERSION = 1
REVOCATION_PAYLOAD_TYPE = payload_type("revocation", SCHEMA_VERSION)
MAX_REVOCATION_BYTES = 64 * 1024  # an envelope with a handful of signatures is 2-4 KB
Reason = tuple[str, str]

# Reason codes of the receiver's refusals (stateful, so not gate stages: the gate judges a plasmid alone)
REVOKED = "REVOKED"
VERSION_ROLLBACK = "VERSION_ROLLBACK"
PEER_GRAYLISTED = "PEER_GRAYLISTED"
REASONS = {
    REVOKED: "a valid revocation names the plasmid's artifact SHA-256, or a key that signed it",
    VERSION_ROLLBACK: "older version of a lineage than one already accepted from the same signer (TUF's rule)",
    PEER_GRAYLISTED: "not fetched: the offering peer's score is below the policy's graylist threshold",
}


class RevocationError(PloraError):
    """A revocation file or record that cannot be read, parsed or made."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ArtifactTarget(_Strict):
    kind: Literal["artifact"]
    sha256: Sha256 = Field(description="SHA-256 of the revoked plasmid's artifact (adapter_model.safetensors)")
    plasmid_id: Identifier | None = Field(default=None, description="a hint for readers; never used to match")


class SignerTarget(_Strict):
    kind: Literal["signer"]
    keyid: Sha256 = Field(description="fingerprint of the revoked key: every plasmid it signed is revoked")


Target = Annotated[ArtifactTarget | SignerTarget, Field(discriminator="kind")]


class Revocation(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    target: Target
    reason: str = Field(min_length=1, max_length=1024, description="why, in words")
    issued_at: datetime = Field(strict=False, description="when (UTC)")
    issuer: str = Field(min_length=1, max_length=256, description="who issued it; the signatures say which keys")

    @field_validator("schema_version", mode="before")
    @classmethod
    def _int(cls, v: object) -> object:
        if type(v) is not int:
            raise ValueError(f"schema_version must be the integer {SCHEMA_VERSION}")
        return v

    @field_validator("issued_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("issued_at needs a time zone (write it in UTC: ...Z)")
        return v.astimezone(UTC)

    def canonical_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def revokes(self, sha256: str, signers: set[str] | frozenset[str] = frozenset()) -> bool:
        """True when this record revokes a plasmid with artifact ``sha256`` whose envelope lists ``signers``."""
        t = self.target
        return t.sha256 == sha256 if isinstance(t, ArtifactTarget) else t.keyid in signers

    def describe(self) -> str:
        t = self.target
        what = f"artifact {t.sha256[:16]}..." + (f" ({t.plasmid_id})" if t.plasmid_id else "") \
            if isinstance(t, ArtifactTarget) else f"every plasmid signed by key {t.keyid[:16]}..."
        return f"{what}: {self.reason} (by {self.issuer}, {self.issued_at:%Y-%m-%dT%H:%M:%SZ})"


def artifact_target(plasmid: str | os.PathLike[str] | None = None, sha256: str | None = None) -> ArtifactTarget:
    """The target naming one plasmid: from its folder (artifact SHA-256 and id from plora.yml) or a SHA-256."""
    if (plasmid is None) == (sha256 is None):
        raise RevocationError("name the revoked plasmid by its folder or by its artifact SHA-256 (one of them)")
    try:
        if plasmid is not None:
            from plora.manifest import read_manifest

            m = read_manifest(plasmid)
            return ArtifactTarget(kind="artifact", sha256=m.artifact.sha256, plasmid_id=m.plasmid_id)
        return ArtifactTarget(kind="artifact", sha256=str(sha256).lower())
    except ValidationError:
        raise RevocationError(f"--sha256 {sha256!r}: expected 64 hex digits") from None


def signer_target(key: str | os.PathLike[str]) -> SignerTarget:
    """The target naming every plasmid a key signed: a public key file, or its fingerprint (64 hex digits)."""
    text = str(key)
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text) and not Path(text).exists():
        return SignerTarget(kind="signer", keyid=text.lower())
    return SignerTarget(kind="signer", keyid=fingerprint(load_public_key(key)))


def make_revocation(target: ArtifactTarget | SignerTarget, reason: str, issuer: str,
                    issued_at: datetime | None = None) -> Revocation:
    try:
        return Revocation(target=target, reason=reason, issuer=issuer,
                          issued_at=issued_at or datetime.now(UTC).replace(microsecond=0))
    except ValidationError as err:
        raise RevocationError(first_validation_error(err)) from None


def issue_revocation(target: ArtifactTarget | SignerTarget, reason: str, key: str | os.PathLike[str] | PrivateKey, *,
                     issuer: str | None = None, issued_at: datetime | None = None,
                     out: str | os.PathLike[str] | None = None) -> Envelope:
    """A new revocation signed by ``key`` (a private key file, or a loaded key), written to ``out`` atomically when
    given. ``issuer`` defaults to the key's fingerprint."""
    private = load_private_key(key) if isinstance(key, str | os.PathLike) else key
    record = make_revocation(target, reason, issuer or fingerprint(private.public_key()), issued_at)
    envelope = sign_envelope(REVOCATION_PAYLOAD_TYPE, record.canonical_bytes(), private)
    if out is not None:
        write_envelope(out, envelope)
    return envelope


def cosign_revocation(path: str | os.PathLike[str], key: str | os.PathLike[str]) -> Envelope:
    """Add ``key``'s signature to the revocation at ``path`` (K-of-N quorum); the record is not changed. Cosigners
    working at once each re-read the file under a lock, so no signature is lost."""
    from plora.fsio import file_lock

    private = load_private_key(key)
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")):
        envelope = read_revocation(path)
        parse_record(envelope)  # refuse to sign something that is not a revocation
        signed = sign_envelope(REVOCATION_PAYLOAD_TYPE, envelope.payload_bytes, private, envelope)
        write_envelope(path, signed)
    return signed


def revocation_id(envelope: Envelope) -> str:
    """SHA-256 of the payload: the same record keeps its id however many keys sign it."""
    return hashlib.sha256(envelope.payload_bytes).hexdigest()


def loads_revocation(data: bytes, source: str = "revocation") -> Envelope:
    """Parse the envelope (bounded size, strict JSON); EnvelopeError when it is not one."""
    if len(data) > MAX_REVOCATION_BYTES:
        raise EnvelopeError(f"{source}: more than the {MAX_REVOCATION_BYTES} bytes allowed")
    return loads_envelope(data, source)


def read_revocation(path: str | os.PathLike[str]) -> Envelope:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_REVOCATION_BYTES + 1)
    except FileNotFoundError:
        raise RevocationError(f"{path}: no such revocation file") from None
    except IsADirectoryError:
        raise RevocationError(f"{path}: is a folder, not a revocation file") from None
    except OSError as err:
        raise RevocationError(f"{path}: cannot read ({err.strerror})") from None
    return loads_revocation(data, path.name)


def parse_record(envelope: Envelope) -> Revocation:
    """The record inside an envelope of the revocation type; RevocationError when it breaks the schema."""
    if envelope.payload_type != REVOCATION_PAYLOAD_TYPE:
        raise RevocationError(f"the envelope holds a {envelope.payload_type!r} record, not a revocation")
    data = envelope.payload_bytes
    try:
        raw = loads_strict(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise RevocationError(f"revocation record: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise RevocationError(f"revocation record: expected a JSON object, found {type(raw).__name__}")
    try:
        return Revocation.model_validate_json(data)
    except ValidationError as err:
        raise RevocationError(f"revocation record: {first_validation_error(err, '<root>')}") from None


@dataclass
class RevocationCheck:
    """What :func:`verify_revocation` found: ``ok`` only with a valid record AND the quorum of trusted signers."""

    ok: bool
    reasons: list[Reason] = field(default_factory=list)
    record: Revocation | None = None
    id: str | None = None
    valid_signers: list[str] = field(default_factory=list)
    untrusted_signers: list[str] = field(default_factory=list)
    quorum: int = 1

    @property
    def codes(self) -> list[str]:
        return [c for c, _ in self.reasons]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "id": self.id,
            "record": None if self.record is None else self.record.model_dump(mode="json", exclude_none=True),
            "reasons": [{"code": c, "message": m} for c, m in self.reasons],
            "valid_signers": self.valid_signers,
            "untrusted_signers": self.untrusted_signers,
            "quorum": self.quorum,
        }


def verify_revocation(source: Envelope | bytes | str | os.PathLike[str], keyring: Keyring,
                      quorum: int = 1) -> RevocationCheck:
    """Check a revocation (an envelope, its bytes, or a file): envelope syntax (ENVELOPE_INVALID), payload type
    (PAYLOAD_TYPE_MISMATCH), the record's schema (SCHEMA_INVALID), then K-of-N signatures by ``keyring``'s keys."""
    check_quorum_arg(quorum)
    try:
        if isinstance(source, Envelope):
            envelope = source
        elif isinstance(source, bytes):
            envelope = loads_revocation(source)
        else:
            envelope = read_revocation(source)
    except EnvelopeError as err:
        return RevocationCheck(False, [("ENVELOPE_INVALID", str(err))], quorum=quorum)
    tally = Tally()
    name = Path(source).name if isinstance(source, str | os.PathLike) else "revocation"
    if not tally_envelope(envelope, REVOCATION_PAYLOAD_TYPE, keyring, tally, source=name):
        return RevocationCheck(False, list(tally.invalid), quorum=quorum)
    record, reasons = None, []
    try:
        record = parse_record(envelope)
    except RevocationError as err:
        reasons.append(("SCHEMA_INVALID", str(err)))
    result = tally.result(quorum)
    reasons += result.reasons
    return RevocationCheck(not reasons, reasons, record, revocation_id(envelope), result.valid_signers,
                           result.untrusted_signers, quorum)


def check_revocation_file(path: str | os.PathLike[str]) -> None:
    """Refuse a path that cannot hold a new revocation (an existing file is replaced only by cosigning)."""
    p = Path(path)
    if p.is_dir():
        raise RevocationError(f"{p} is a folder; --out names the revocation file to write (e.g. {p / 'NAME.json'})")
    if p.exists():
        raise RevocationError(f"{p} already exists; add a signature with plora revoke --cosign {p} --key KEY")
    if p.suffix != ".json":
        raise RevocationError(f"{p}: a revocation file ends in .json")
