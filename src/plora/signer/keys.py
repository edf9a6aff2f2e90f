"""Signing keys: generation, loading, fingerprints, the three algorithms, and the keyring of trusted keys.

    >>> from plora.signer.keys import generate_keypair, load_private_key, sign_bytes, verify_bytes
    >>> priv_path, pub_path = generate_keypair("ecdsa-p256", "keys/carol")
    >>> key = load_private_key(priv_path)
    >>> verify_bytes(key.public_key(), sign_bytes(key, b"data"), b"data")
    True

Algorithms (the algorithm follows from the KEY, never from a field an attacker can write):

* RSA 3072-bit or larger (smaller keys are refused): RSA-PSS, SHA-256, MGF1-SHA-256, salt = 32 bytes (the digest
  length); verification demands exactly that salt length.
* Ed25519: pure Ed25519.
* ECDSA on P-256 with SHA-256, DER-encoded signatures (what DSSE, Sigstore and OpenSSF model-signing use); P-384
  keys (SHA-384) are accepted too, since model-signing makes them.

A key is named by its fingerprint: SHA-256 (hex) of its DER SubjectPublicKeyInfo, what
``openssl pkey -pubin -outform DER | sha256sum`` prints.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from plora.errors import SignatureError
from plora.fsio import atomic_write_bytes, folder_lock

KeyAlgo = Literal["rsa", "ed25519", "ecdsa-p256"]
KEY_ALGOS: tuple[str, ...] = ("rsa", "ed25519", "ecdsa-p256")
RSA_BITS = 3072
RSA_MIN_BITS = 3072
EC_CURVES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384}
PUBLIC_SUFFIX = ".pub"
_MAX_KEY_FILE = 64 * 1024

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def algorithm_name(key: PublicKey | PrivateKey) -> str:
    """``rsa-pss-sha256``, ``ed25519``, ``ecdsa-p256-sha256`` or ``ecdsa-p384-sha384``: what a signature by it is."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ecdsa-p256-sha256" if key.curve.name == "secp256r1" else "ecdsa-p384-sha384"
    return "rsa-pss-sha256"


def check_key(key: object, where: str) -> None:
    """Refuse key types and sizes plora does not sign or verify with."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_BITS:
            raise SignatureError(f"{where}: RSA key is {key.key_size} bits; plora requires at least {RSA_MIN_BITS}")
    elif isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name not in EC_CURVES:
            raise SignatureError(f"{where}: EC curve {key.curve.name} is not supported; use P-256 (or P-384)")
    elif not isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        raise SignatureError(
            f"{where}: unsupported key type {type(key).__name__}; use RSA-3072, Ed25519 or ECDSA P-256"
        )


def sign_bytes(private_key: PrivateKey, data: bytes) -> bytes:
    """The raw signature of ``data`` under the key's algorithm (see the module docstring)."""
    check_key(private_key, "signing key")
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(EC_CURVES[private_key.curve.name]()))
    return private_key.sign(data, _pss(), hashes.SHA256())


def verify_bytes(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(EC_CURVES[public_key.curve.name]()))
        else:
            public_key.verify(signature, data, _pss(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_keypair(algo: KeyAlgo, out: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
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
    elif algo == "ecdsa-p256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise SignatureError(f"unknown key algorithm {algo!r}; expected one of {', '.join(KEY_ALGOS)}")
    priv_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(priv_path.parent):  # keygens of one --out at once: one writes its pair, the others refuse
        if not overwrite:
            for p in (priv_path, pub_path):
                if p.exists():
                    raise SignatureError(f"{p} already exists; refusing to overwrite a key")
        # Public first: a crash in between never leaves a private key without its public half.
        atomic_write_bytes(pub_path, public_pem(private.public_key()), mode=0o644)
        atomic_write_bytes(priv_path, priv_pem, mode=0o600)
    return priv_path, pub_path


def public_pem(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_key: PublicKey) -> str:
    """SHA-256 hex of the key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _read_key_file(path: Path) -> bytes:
    from plora.fsio import read_bounded

    if not path.exists() and not path.is_symlink():
        raise SignatureError(f"{path}: key file not found")
    return read_bounded(path, _MAX_KEY_FILE, "PEM key file", SignatureError)


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
    check_key(key, str(path))
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
    check_key(key, str(path))
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
        check_key(key, source)
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
    from plora.fsio import read_bounded

    try:
        head = read_bounded(path, _MAX_KEY_FILE, "PEM key file")[:64]
    except OSError:
        return False
    return head.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----")
