"""OpenSSF model-signing interop: ``model.sig`` in a plasmid folder, made and checked by the real ``model_signing``.

    >>> from plora.signer import generate_keypair, sign_plasmid
    >>> _ = generate_keypair("ecdsa-p256", "keys/ec")      # model signing works offline with EC keys only
    >>> sign_plasmid("out/legal", "keys/ec", format="oms").path    # an OpenSSF model-signing bundle
    PosixPath('out/legal/model.sig')

    $ model_signing verify key out/legal --signature out/legal/model.sig --public_key keys/ec.pub

``model.sig`` is a Sigstore bundle (v0.3) whose DSSE envelope carries an in-toto statement (predicate
``https://model_signing/signature/v1.0``) listing the SHA-256 of every file of the folder. plora signs every file
except the two signature files (``plora.sig.json`` and ``model.sig``, recorded as ignored paths in the statement,
so model_signing's own verifier skips them too). Private-key signing in model-signing 1.1.1 takes EC keys only
(P-256, P-384): ``plora keygen --algo ecdsa-p256``.

A bundle counts toward a plasmid's quorum when model_signing verifies it with a trusted EC key (picked by the
bundle's key hint, the SHA-256 of the PEM public key) AND the statement covers plora.yml, adapter_config.json and
the artifact AND no other file of the folder is left unsigned. ``model_signing`` is imported only here, and
only when a bundle is made or found (it takes about a second to import).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from plora.errors import SignatureError
from plora.fsio import atomic_write_bytes
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    MANIFEST_NAME,
    OMS_SIGNATURE_NAME,
    SIGNATURE_NAME,
    Manifest,
    read_manifest,
)
from plora.signer.dsse import Tally
from plora.signer.keys import Keyring, PrivateKey, PublicKey, fingerprint, public_pem
from plora.strictjson import loads_strict

OMS_PREDICATE = "https://model_signing/signature/v1.0"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_BUNDLE_BYTES = 1 << 20
SIDECARS = (SIGNATURE_NAME, OMS_SIGNATURE_NAME)
_GIT_PATHS = (".git", ".github", ".gitignore", ".gitattributes")  # model_signing ignores them by default
INSTALL_HINT = "model-signing is not installed: pip install model-signing==1.1.1 pyopenssl==26.4.0"


def _model_signing() -> Any:
    try:
        import model_signing
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError:
        raise SignatureError(INSTALL_HINT) from None
    return model_signing


def key_hint(public_key: PublicKey) -> str:
    """How a model-signing bundle names its key: SHA-256 (hex) of the PEM SubjectPublicKeyInfo."""
    return hashlib.sha256(public_pem(public_key)).hexdigest()


def sign_bundle(folder: str | os.PathLike[str], key_path: str | os.PathLike[str], private: PrivateKey,
                replace: bool = False) -> Path:
    """Write ``folder/model.sig`` with model_signing's elliptic-key signer (atomically). A bundle holds one
    signature: one by another key (or one that cannot be read) is replaced only with ``replace``."""
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise SignatureError(
            "--format oms needs an EC key (P-256 or P-384), as model-signing's key flow takes no RSA or Ed25519: "
            "plora keygen --algo ecdsa-p256 --out keys/NAME"
        )
    folder = Path(folder)
    existing = folder / OMS_SIGNATURE_NAME
    if existing.exists() and not replace:
        try:
            hint = _hint(_read_bundle(existing))
        except (OSError, ValueError):
            hint = None
        if hint != key_hint(private.public_key()):
            raise SignatureError(
                f"{existing} holds a signature by another key (a model.sig bundle has one signer): add --force to "
                "replace it, or sign with --format dsse, which keeps every signer's signature"
            )
    ms = _model_signing()
    hashing = ms.hashing.Config().set_ignored_paths(paths=list(SIDECARS), ignore_git_paths=True)
    with tempfile.TemporaryDirectory(prefix="plora-oms-") as tmp:
        out = Path(tmp) / OMS_SIGNATURE_NAME
        try:
            ms.signing.Config().use_elliptic_key_signer(private_key=str(key_path)).set_hashing_config(hashing).sign(
                folder, out
            )
        except (OSError, ValueError) as err:
            raise SignatureError(f"model_signing could not sign {folder}: {err}") from None
        return atomic_write_bytes(folder / OMS_SIGNATURE_NAME, out.read_bytes(), mode=0o644)


def _read_bundle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        data = fh.read(MAX_BUNDLE_BYTES + 1)
    if len(data) > MAX_BUNDLE_BYTES:
        raise ValueError(f"larger than {MAX_BUNDLE_BYTES} bytes")
    bundle = loads_strict(data)
    if not isinstance(bundle, dict) or not isinstance(bundle.get("dsseEnvelope"), dict):
        raise ValueError("no dsseEnvelope: not a Sigstore bundle")
    return bundle


def _hint(bundle: dict[str, Any]) -> str | None:
    material = bundle.get("verificationMaterial")
    key = material.get("publicKey") if isinstance(material, dict) else None
    hint = key.get("hint") if isinstance(key, dict) else None
    return hint if isinstance(hint, str) and hint else None


def listed_key_fingerprints(folder: str | os.PathLike[str], keyring: Keyring) -> set[str]:
    """Fingerprints of the keys in ``keyring`` that ``folder/model.sig`` names (unverified; empty without a
    readable bundle): a bundle names its key by a hint, so only a key the reader holds can be linked to it.

    The hint is outside what is signed: a bundle without one counts toward a quorum with whichever trusted EC key
    verifies it (:func:`tally_bundle`), so here it names every held EC key that verifies it (every held EC key
    when it cannot be checked): dropping the hint never unlinks a bundle from its signer."""
    try:
        hint = _hint(_read_bundle(Path(folder) / OMS_SIGNATURE_NAME))
    except (OSError, ValueError):
        return set()
    if hint is not None:
        return {fp for fp, key in keyring.keys.items() if key_hint(key) == hint}
    ec_keys = {fp: key for fp, key in keyring.keys.items() if isinstance(key, ec.EllipticCurvePublicKey)}
    try:
        manifest = read_manifest(folder)
        return {fp for fp, key in ec_keys.items() if verify_bundle(Path(folder), key, manifest) is None}
    except Exception:  # noqa: BLE001 - no manifest, no model_signing: the bundle may be by any of them
        return set(ec_keys)


def _signed_names(bundle: dict[str, Any]) -> set[str]:
    """File names the (already verified) statement lists."""
    env = bundle["dsseEnvelope"]
    if env.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
        raise ValueError(f"payload type {env.get('payloadType')!r}, expected {IN_TOTO_PAYLOAD_TYPE}")
    statement = loads_strict(base64.b64decode(env["payload"], validate=True))
    if statement.get("predicateType") != OMS_PREDICATE:
        raise ValueError(f"predicate {statement.get('predicateType')!r}, expected {OMS_PREDICATE}")
    return {str(r["name"]) for r in statement["predicate"]["resources"]}


def _folder_files(folder: Path) -> set[str]:
    out = set()
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if rel.parts[0] in _GIT_PATHS or rel.as_posix() in SIDECARS:
            continue
        if p.is_file() or p.is_symlink():
            out.add(rel.as_posix())
    return out


def verify_bundle(folder: Path, public_key: ec.EllipticCurvePublicKey, manifest: Manifest) -> str | None:
    """None when model_signing verifies ``folder/model.sig`` with ``public_key`` and it covers the plasmid;
    otherwise why not (one line)."""
    ms = _model_signing()
    path = folder / OMS_SIGNATURE_NAME
    with tempfile.NamedTemporaryFile(prefix="plora-oms-", suffix=".pub") as pub:
        pub.write(public_pem(public_key))
        pub.flush()
        try:
            # unsigned files are checked below, where plora.sig.json (added after model.sig) is allowed
            ms.verifying.Config().use_elliptic_key_verifier(public_key=pub.name).set_ignore_unsigned_files(True).verify(
                folder, path
            )
        except Exception as err:  # noqa: BLE001 - model_signing raises ValueError, OSError, protobuf and KeyError
            return " ".join(f"model_signing: {err}".split())[:300]
    try:
        names = _signed_names(_read_bundle(path))
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as err:
        return f"statement unreadable ({err})"
    needed = {MANIFEST_NAME, ADAPTER_CONFIG_NAME, manifest.artifact.filename} - names
    if needed:
        return f"the statement does not cover {', '.join(sorted(needed))}"
    unsigned = _folder_files(folder) - names
    if unsigned:
        return f"files not covered by {OMS_SIGNATURE_NAME}: {', '.join(sorted(unsigned)[:5])}"
    return None


def tally_bundle(folder: str | os.PathLike[str], manifest: Manifest, keyring: Keyring, tally: Tally) -> None:
    """Count ``folder/model.sig`` toward the quorum if a trusted EC key verifies it (see the module docstring)."""
    folder = Path(folder)
    try:
        hint = _hint(_read_bundle(folder / OMS_SIGNATURE_NAME))
    except (OSError, ValueError) as err:
        tally.invalid.append(("ENVELOPE_INVALID", f"{OMS_SIGNATURE_NAME}: {err}"))
        return
    candidates = [
        (fp, key)
        for fp, key in sorted(keyring.keys.items())
        if isinstance(key, ec.EllipticCurvePublicKey) and (hint is None or key_hint(key) == hint)
    ]
    if not candidates:
        who = f"key hint {hint[:16]}..." if hint else "an unnamed key"
        tally.uncheckable.append(
            ("SIGNER_UNTRUSTED", f"{OMS_SIGNATURE_NAME} is signed by {who}, no trusted EC key matches")
        )
        return
    try:
        failures = []
        for fp, key in candidates:
            why = verify_bundle(folder, key, manifest)
            if why is None:
                tally.add_valid(fingerprint(key))
                return
            failures.append((fp, why))
    except SignatureError as err:  # model-signing missing: the bundle cannot count, but is not forged either
        tally.uncheckable.append(("SIGNER_UNTRUSTED", f"{OMS_SIGNATURE_NAME} not checked: {err}"))
        return
    if hint is not None:
        fp, why = failures[0]
        tally.invalid.append(("SIGNATURE_INVALID", f"{OMS_SIGNATURE_NAME} by trusted key {fp[:16]}...: {why}"))
    else:
        tally.uncheckable.append(
            ("SIGNER_UNTRUSTED", f"{OMS_SIGNATURE_NAME} names no key and verifies with no trusted EC key")
        )
