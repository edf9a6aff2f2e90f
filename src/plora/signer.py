"""Keys, signatures and K-of-N quorum for plasmids (``cryptography`` only: no torch).

    >>> from plora.signer import generate_keypair, sign_plasmid, Keyring, verify_plasmid
    >>> generate_keypair("rsa", "keys/bob")
    (PosixPath('keys/bob'), PosixPath('keys/bob.pub'))
    >>> m = sign_plasmid("out/legal", "keys/bob")       # out/legal is already signed by keys/alice
    >>> [s.algo for s in m.signatures]
    ['rsa-pss-sha256', 'rsa-pss-sha256']
    >>> result = verify_plasmid("out/legal", Keyring.load(["keys/"]), quorum=2)
    >>> result.ok, result.reasons, len(result.valid_signers)
    (True, [], 2)

What is signed: :func:`plora.manifest.canonical_bytes` (every manifest field except ``signatures``, as
sorted-key compact JSON), which holds the artifact's and the adapter_config's SHA-256, the base model, rank,
alpha and targets, so none of them can change without breaking every signature.

Algorithms:

* ``rsa-pss-sha256``: RSA 3072-bit (smaller RSA keys are refused), PSS padding with SHA-256, MGF1 with
  SHA-256, salt length = the digest length (32 bytes). Verification demands exactly that salt length.
* ``ed25519``: pure Ed25519 over the same bytes.

A key is identified by its fingerprint: SHA-256 (hex) of its DER SubjectPublicKeyInfo, the same value
``openssl pkey -pubin -outform DER | sha256sum`` prints. In a quorum each DISTINCT trusted fingerprint
counts once, however many signatures it has in the manifest.

Failure codes (strings, equal to the gate's :class:`plora.gate.reasons.Reason` values): MANIFEST_MISSING,
SCHEMA_INVALID, ARTIFACT_SHA_MISMATCH, CONFIG_SHA_MISMATCH, SIGNATURE_MISSING, SIGNATURE_INVALID,
SIGNER_UNTRUSTED, QUORUM_NOT_MET.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from plora.errors import ManifestError, PloraError, SignatureError
from plora.fsio import atomic_write_bytes
from plora.hashing import sha256_bytes, sha256_file
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    MANIFEST_NAME,
    UNTRUSTED_MAX_BYTES,
    Manifest,
    Signature,
    canonical_bytes,
    read_manifest,
    write_manifest,
)

RSA_BITS = 3072
RSA_MIN_BITS = 3072
PUBLIC_SUFFIX = ".pub"
_MAX_KEY_FILE = 64 * 1024

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
Reason = tuple[str, str]


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


# ----------------------------------------------------------------------------------------------- keys


def generate_keypair(
    algo: Literal["rsa", "ed25519"], out: str | os.PathLike[str], *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write a private key (PKCS#8 PEM, mode 0600) at ``out`` and its public key (PEM) at ``out.pub``.

    Refuses to replace existing files unless ``overwrite``: losing a signing key is not undoable.
    """
    priv_path = Path(out)
    pub_path = priv_path.with_name(priv_path.name + PUBLIC_SUFFIX)
    if priv_path.name.endswith(PUBLIC_SUFFIX):
        raise SignatureError(f"--out {priv_path} names the private key; do not end it in {PUBLIC_SUFFIX}")
    if not overwrite:
        for p in (priv_path, pub_path):
            if p.exists():
                raise SignatureError(f"{p} already exists; refusing to overwrite a key")
    private: PrivateKey
    if algo == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif algo == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise SignatureError(f"unknown key algorithm {algo!r}; expected rsa or ed25519")
    priv_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Public first: a crash in between never leaves a private key without its public half.
    atomic_write_bytes(pub_path, pub_pem, mode=0o644)
    atomic_write_bytes(priv_path, priv_pem, mode=0o600)
    return priv_path, pub_path


def fingerprint(public_key: PublicKey) -> str:
    """SHA-256 hex of the key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _check_key(key: object, where: str) -> None:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_BITS:
            raise SignatureError(f"{where}: RSA key is {key.key_size} bits; plora requires at least {RSA_MIN_BITS}")
    elif not isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{where}: unsupported key type {type(key).__name__}; use RSA-3072 or Ed25519")


def _read_key_file(path: Path) -> bytes:
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise SignatureError(f"{path}: too large to be a PEM key")
        return path.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{path}: key file not found") from None
    except OSError as err:
        raise SignatureError(f"{path}: cannot read key ({err.strerror})") from None


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Load (and, for RSA, validate) a PEM private key; cached per file version, since RSA validation takes ~0.4 s."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return _load_private_key(path, 0, -1)  # reports the error
    return _load_private_key(path.resolve(), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load_private_key(path: Path, mtime_ns: int, size: int) -> PrivateKey:
    data = _read_key_file(path)
    if b"PRIVATE KEY" not in data:
        raise SignatureError(f"{path}: not a PEM private key (pass keys/NAME, not keys/NAME.pub)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise SignatureError(f"{path}: cannot load private key ({err})") from None
    _check_key(key, str(path))
    return key  # type: ignore[return-value]


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    path = Path(path)
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        raise SignatureError(f"{path}: is a private key; trust its public half {path.name}{PUBLIC_SUFFIX}")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise SignatureError(f"{path}: not a PEM public key ({err})") from None
    _check_key(key, str(path))
    return key  # type: ignore[return-value]


@dataclass
class Keyring:
    """Trusted public keys by fingerprint. ``Keyring.load(["keys/", "bob.pub"])``."""

    keys: dict[str, PublicKey] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: Iterable[str | os.PathLike[str]]) -> Keyring:
        """Files must be public keys; in a folder, private keys and files that are not PEM keys are skipped."""
        ring = cls()
        paths = list(paths)
        for raw in paths:
            p = Path(raw)
            if p.is_dir():
                for child in sorted(p.iterdir()):
                    if child.is_file() and _looks_public(child):
                        ring.add(load_public_key(child), str(child))
            elif p.exists():
                ring.add(load_public_key(p), str(p))
            else:
                raise SignatureError(f"{p}: trusted key path not found")
        if not ring.keys:
            raise SignatureError(f"no public keys found in {', '.join(str(p) for p in paths) or 'no paths'}")
        return ring

    @classmethod
    def from_keys(cls, keys: Iterable[PublicKey]) -> Keyring:
        ring = cls()
        for k in keys:
            ring.add(k, "<memory>")
        return ring

    def add(self, key: PublicKey, source: str) -> str:
        _check_key(key, source)
        fp = fingerprint(key)
        self.keys.setdefault(fp, key)
        self.sources.setdefault(fp, source)
        return fp

    def __contains__(self, fp: object) -> bool:
        return fp in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.keys))


def _looks_public(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----")


# ------------------------------------------------------------------------------------------ signing


def _algo_of(key: object) -> str:
    return "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) else "rsa-pss-sha256"


def sign_manifest(manifest: Manifest, private_key: PrivateKey) -> Manifest:
    """The manifest with one more signature (a previous one by the same key is replaced)."""
    _check_key(private_key, "signing key")
    data = canonical_bytes(manifest)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        raw = private_key.sign(data)
    else:
        raw = private_key.sign(data, _pss(), hashes.SHA256())
    sig = Signature(
        algo=_algo_of(private_key),
        key_fingerprint=fingerprint(private_key.public_key()),
        signature=base64.b64encode(raw).decode("ascii"),
    )
    return manifest.with_signature(sig)


def signature_valid(manifest: Manifest, sig: Signature, public_key: PublicKey) -> bool:
    if sig.algo != _algo_of(public_key):
        return False
    try:
        raw = base64.b64decode(sig.signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    data = canonical_bytes(manifest)
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(raw, data)
        else:
            public_key.verify(raw, data, _pss(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def check_files(folder: str | os.PathLike[str], manifest: Manifest) -> list[Reason]:
    """Re-hash the artifact and adapter_config.json against the manifest; [] when both match."""
    from plora.plasmid import artifact_path

    folder = Path(folder)
    reasons: list[Reason] = []
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
        cfg_digest = sha256_bytes(cfg.read_bytes())
    except OSError:
        reasons.append(("CONFIG_SHA_MISMATCH", f"{ADAPTER_CONFIG_NAME} is missing"))
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


def sign_plasmid(folder: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Manifest:
    """Re-hash the files, refuse if they disagree with the manifest, then add a signature to plora.yml."""
    folder = Path(folder)
    private = load_private_key(key_path)
    manifest = read_manifest(folder)
    problems = check_files(folder, manifest)
    if problems:
        raise SignatureError(f"refusing to sign {folder}: " + "; ".join(msg for _, msg in problems))
    signed = sign_manifest(manifest, private)
    write_manifest(folder, signed)
    return signed


# ------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyResult:
    ok: bool
    reasons: list[Reason] = field(default_factory=list)
    valid_signers: list[str] = field(default_factory=list)
    untrusted_signers: list[str] = field(default_factory=list)
    quorum: int = 1

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
        }


def verify_signatures(manifest: Manifest, keyring: Keyring, quorum: int = 1) -> VerifyResult:
    """Check every signature; ok when at least ``quorum`` distinct trusted keys signed and none is forged.

    A signature by a key outside the keyring cannot be checked: it is reported (SIGNER_UNTRUSTED) and
    fails the result only when the quorum is not met without it. A signature that claims a trusted
    fingerprint but does not verify always fails the result (SIGNATURE_INVALID).
    """
    if quorum < 1:
        raise SignatureError(f"quorum must be at least 1, got {quorum}")
    if not manifest.signatures:
        return VerifyResult(False, [("SIGNATURE_MISSING", "the manifest carries no signature")], quorum=quorum)
    invalid: list[Reason] = []
    valid: list[str] = []
    untrusted: list[str] = []
    duplicates: set[str] = set()
    for sig in manifest.signatures:
        fp = sig.key_fingerprint
        key = keyring.keys.get(fp)
        if key is None:
            if fp not in untrusted:
                untrusted.append(fp)
            continue
        if not signature_valid(manifest, sig, key):
            invalid.append(
                (
                    "SIGNATURE_INVALID",
                    f"{sig.algo} signature by trusted key {fp[:16]}... does not verify "
                    "(manifest or signature changed after signing)",
                )
            )
        elif fp in valid:
            duplicates.add(fp)
        else:
            valid.append(fp)
    reasons = list(invalid)
    if len(valid) < quorum:
        reasons += [
            ("SIGNER_UNTRUSTED", f"signature by unknown key {fp[:16]}... (not in the keyring)") for fp in untrusted
        ]
        dup = (
            f"; repeated signatures by {', '.join(d[:16] + '...' for d in sorted(duplicates))} counted once"
            if duplicates
            else ""
        )
        reasons.append(("QUORUM_NOT_MET", f"{len(valid)} distinct trusted signer(s), {quorum} required{dup}"))
    return VerifyResult(not reasons, reasons, valid, untrusted, quorum)


def verify_plasmid(folder: str | os.PathLike[str], keyring: Keyring, quorum: int = 1) -> VerifyResult:
    """Re-hash the artifact and adapter_config.json, then check the signatures against ``keyring``."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        return VerifyResult(False, [("MANIFEST_MISSING", f"{folder}: no {MANIFEST_NAME}")], quorum=quorum)
    try:
        manifest = read_manifest(folder, max_bytes=UNTRUSTED_MAX_BYTES)
    except PloraError as err:
        return VerifyResult(False, [("SCHEMA_INVALID", str(err))], quorum=quorum)
    file_reasons = check_files(folder, manifest)
    sig = verify_signatures(manifest, keyring, quorum)
    reasons = file_reasons + sig.reasons
    return VerifyResult(not reasons, reasons, sig.valid_signers, sig.untrusted_signers, quorum)
