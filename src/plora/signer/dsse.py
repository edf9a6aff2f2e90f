"""DSSE envelopes for any signed plora record, and K-of-N quorum verification over them.

    >>> from plora.signer.dsse import payload_type, sign_envelope, verify_envelope
    >>> from plora.signer.keys import Keyring, generate_keypair, load_private_key
    >>> _ = generate_keypair("ed25519", "keys/bob")
    >>> kind = payload_type("plasmid", 1)
    >>> kind
    'application/vnd.plora.plasmid.v1+json'
    >>> env = sign_envelope(kind, b'{"a":1}', load_private_key("keys/alice"))
    >>> env = sign_envelope(kind, b'{"a":1}', load_private_key("keys/bob"), env)   # one envelope, two signatures
    >>> verify_envelope(env, kind, Keyring.load(["keys/"]), quorum=2).ok
    True

The envelope is the one of the DSSE specification (github.com/secure-systems-lab/dsse, v1.0)::

    {"payloadType": "application/vnd.plora.plasmid.v1+json",
     "payload": "<base64 of the record's bytes>",
     "signatures": [{"keyid": "<fingerprint of the signer>", "sig": "<base64 signature>"}, ...]}

Each signature covers PAE(payloadType, payload) = ``b"DSSEv1 %d %s %d %s" % (len(type), type, len(payload),
payload)``, never the payload alone, so the payload type is signed with the bytes: a signature made for one
record kind (a plasmid manifest) never verifies as another (a revocation), even over identical bytes. The
verifier names the type it expects and refuses any other before checking a signature (PAYLOAD_TYPE_MISMATCH).
``keyid`` is the signer's fingerprint (SHA-256 of its DER SubjectPublicKeyInfo); the algorithm follows from
the trusted key, so an attacker cannot choose it. Unknown fields, duplicate JSON keys, non-base64 text and
oversized envelopes are refused (ENVELOPE_INVALID).

Quorum: ok when at least ``quorum`` DISTINCT trusted keys signed and no signature by a trusted key fails. A
signature by a key outside the keyring cannot be checked: it is reported (SIGNER_UNTRUSTED) only when the
quorum is not met without it. The reason codes are the strings of :class:`plora.gate.reasons.Reason`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plora.errors import SignatureError, first_validation_error
from plora.fsio import atomic_write_bytes
from plora.signer.keys import Keyring, PrivateKey, check_key, fingerprint, sign_bytes, verify_bytes
from plora.strictjson import loads_strict

MAX_ENVELOPE_BYTES = 256 * 1024
MAX_SIGNATURES = 64
_TYPE_RE = re.compile(r"^application/vnd\.plora\.(?P<kind>[a-z][a-z0-9-]{0,63})\.v(?P<version>[1-9][0-9]{0,5})\+json$")
Reason = tuple[str, str]

Base64Text = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9+/_-]+={0,2}$", description="base64")]


class EnvelopeError(SignatureError):
    """An envelope that does not parse or breaks the schema (reason ENVELOPE_INVALID)."""


def payload_type(kind: str, version: int) -> str:
    """The DSSE payloadType of a plora record: ``application/vnd.plora.<kind>.v<version>+json``."""
    name = f"application/vnd.plora.{kind}.v{version}+json"
    if not _TYPE_RE.fullmatch(name):
        raise SignatureError(f"bad record kind {kind!r} or version {version!r} for a payload type")
    return name


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what every signature in an envelope covers."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def _b64decode(text: str) -> bytes:
    # DSSE allows standard or URL-safe base64; plora writes standard
    alt = b"-_" if ("-" in text or "_" in text) else None
    return base64.b64decode(text, altchars=alt, validate=True)


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True
    )  # JSON names only: payloadType, not payload_type


class EnvelopeSignature(_Strict):
    keyid: str = Field(pattern=r"^[0-9a-f]{64}$", description="fingerprint: SHA-256 of the DER SubjectPublicKeyInfo")
    sig: Base64Text = Field(max_length=4096)

    @field_validator("sig")
    @classmethod
    def _decodes(cls, v: str) -> str:
        try:
            _b64decode(v)
        except (binascii.Error, ValueError):
            raise ValueError("sig is not valid base64") from None
        return v


class Envelope(_Strict):
    payload_type: str = Field(alias="payloadType", min_length=1, max_length=256)
    payload: Base64Text = Field(max_length=MAX_ENVELOPE_BYTES)
    signatures: tuple[EnvelopeSignature, ...] = Field(min_length=1, max_length=MAX_SIGNATURES, strict=False)

    @field_validator("payload")
    @classmethod
    def _decodes(cls, v: str) -> str:
        try:
            _b64decode(v)
        except (binascii.Error, ValueError):
            raise ValueError("payload is not valid base64") from None
        return v

    @property
    def payload_bytes(self) -> bytes:
        return _b64decode(self.payload)

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(by_alias=True, mode="json"), indent=2) + "\n").encode("utf-8")


def sign_envelope(
    payload_type: str, payload: bytes, private_key: PrivateKey, envelope: Envelope | None = None
) -> Envelope:
    """An envelope over ``payload`` with one more signature: a new one, or ``envelope`` with this key's signature
    added (a previous signature by the same key is replaced). ``envelope`` must carry the same type and bytes."""
    check_key(private_key, "signing key")
    if envelope is not None and (envelope.payload_type != payload_type or envelope.payload_bytes != payload):
        raise SignatureError(
            f"the existing envelope signs another record ({envelope.payload_type}); refusing to mix signatures"
        )
    fp = fingerprint(private_key.public_key())
    raw = sign_bytes(private_key, pae(payload_type, payload))
    sig = EnvelopeSignature(keyid=fp, sig=base64.b64encode(raw).decode("ascii"))
    kept = tuple(s for s in envelope.signatures if s.keyid != fp) if envelope is not None else ()
    return Envelope(
        payloadType=payload_type, payload=base64.b64encode(payload).decode("ascii"), signatures=(*kept, sig)
    )


def loads_envelope(data: bytes, source: str = "envelope") -> Envelope:
    """Parse and validate an envelope; EnvelopeError (one line) for anything malformed."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"{source}: more than the {MAX_ENVELOPE_BYTES} bytes allowed")
    try:
        raw = loads_strict(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise EnvelopeError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise EnvelopeError(f"{source}: expected a JSON object, found {type(raw).__name__}")
    try:
        return Envelope.model_validate(raw)
    except ValidationError as err:
        raise EnvelopeError(f"{source}: {first_validation_error(err, '<root>')}") from None


def read_envelope(path: str | os.PathLike[str]) -> Envelope:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_ENVELOPE_BYTES + 1)  # bounded even for a huge file
    except FileNotFoundError:
        raise EnvelopeError(f"{path}: no envelope") from None
    except OSError as err:
        raise EnvelopeError(f"{path}: cannot read ({err.strerror})") from None
    return loads_envelope(data, source=path.name)


def write_envelope(path: str | os.PathLike[str], envelope: Envelope) -> Path:
    return atomic_write_bytes(Path(path), envelope.to_json(), mode=0o644)


# ------------------------------------------------------------------------------------------------- quorum


@dataclass
class VerifyResult:
    ok: bool
    reasons: list[Reason] = field(default_factory=list)
    valid_signers: list[str] = field(default_factory=list)
    untrusted_signers: list[str] = field(default_factory=list)
    quorum: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        return [code for code, _ in self.reasons]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "reasons": [{"code": c, "message": m} for c, m in self.reasons],
            "valid_signers": self.valid_signers,
            "untrusted_signers": self.untrusted_signers,
            "quorum": self.quorum,
            "notes": self.notes,
        }


@dataclass
class Tally:
    """Signatures seen so far, from one envelope or several sources (a DSSE envelope and a model-signing bundle):
    each distinct trusted key counts once toward the quorum."""

    valid: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)
    invalid: list[Reason] = field(default_factory=list)
    duplicates: set[str] = field(default_factory=set)
    uncheckable: list[Reason] = field(default_factory=list)  # reported only when the quorum is not met
    notes: list[str] = field(default_factory=list)

    def add_valid(self, fp: str) -> None:
        if fp in self.valid:
            self.duplicates.add(fp)
        else:
            self.valid.append(fp)

    def add_untrusted(self, fp: str) -> None:
        if fp not in self.untrusted:
            self.untrusted.append(fp)

    def result(self, quorum: int) -> VerifyResult:
        reasons = list(self.invalid)
        if len(self.valid) < quorum:
            reasons += [
                ("SIGNER_UNTRUSTED", f"signature by unknown key {fp[:16]}... (not in the keyring)")
                for fp in self.untrusted
            ]
            reasons += self.uncheckable
            dup = (
                f"; repeated signatures by {', '.join(d[:16] + '...' for d in sorted(self.duplicates))} counted once"
                if self.duplicates
                else ""
            )
            reasons.append(("QUORUM_NOT_MET", f"{len(self.valid)} distinct trusted signer(s), {quorum} required{dup}"))
        return VerifyResult(not reasons, reasons, list(self.valid), list(self.untrusted), quorum, list(self.notes))


def check_quorum_arg(quorum: int, keyring: Keyring | None = None) -> None:
    """A quorum is at least 1 and, against a keyring from the user's configuration, at most its distinct keys:
    a larger one would reject every plasmid as if the plasmid were at fault. (The recall store's keyring may be
    empty on purpose, nobody may revoke: it passes none.)"""
    if quorum < 1:
        raise SignatureError(f"quorum must be at least 1, got {quorum}")
    if keyring is not None and quorum > len(keyring):
        raise SignatureError(
            f"quorum {quorum} can never be met: the trusted keys hold {len(keyring)} distinct key(s)"
        )


def tally_envelope(
    envelope: Envelope, expected_type: str, keyring: Keyring, tally: Tally, *, source: str = "envelope"
) -> bool:
    """Check every signature of ``envelope`` into ``tally``; False (and a reason) if its type is not the one
    expected, in which case no signature is checked."""
    if envelope.payload_type != expected_type:
        tally.invalid.append(
            (
                "PAYLOAD_TYPE_MISMATCH",
                f"{source} holds a {envelope.payload_type!r} record, {expected_type!r} expected",
            )
        )
        return False
    message = pae(expected_type, envelope.payload_bytes)
    for sig in envelope.signatures:
        key = keyring.keys.get(sig.keyid)
        if key is None:
            tally.add_untrusted(sig.keyid)
        elif not verify_bytes(key, _b64decode(sig.sig), message):
            tally.invalid.append(
                (
                    "SIGNATURE_INVALID",
                    f"{source}: signature by trusted key {sig.keyid[:16]}... does not verify "
                    "(envelope or signature changed after signing)",
                )
            )
        else:
            tally.add_valid(sig.keyid)
    return True


def verify_envelope(envelope: Envelope, expected_type: str, keyring: Keyring, quorum: int = 1) -> VerifyResult:
    """Quorum verification of one envelope whose payload must be of ``expected_type``."""
    check_quorum_arg(quorum)
    tally = Tally()
    tally_envelope(envelope, expected_type, keyring, tally)
    return tally.result(quorum)
