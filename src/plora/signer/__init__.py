"""Keys, DSSE envelopes, K-of-N quorum and plasmid signatures (``cryptography`` only: no torch).

    >>> from plora.signer import generate_keypair, sign_plasmid, Keyring, verify_plasmid
    >>> generate_keypair("ed25519", "keys/bob")
    (PosixPath('keys/bob'), PosixPath('keys/bob.pub'))
    >>> sign_plasmid("out/legal", "keys/bob").path          # out/legal is already signed by keys/alice
    PosixPath('out/legal/plora.sig.json')
    >>> result = verify_plasmid("out/legal", Keyring.load(["keys/"]), quorum=2)
    >>> result.ok, result.reasons, len(result.valid_signers)
    (True, [], 2)

Four modules, one concern each:

* :mod:`plora.signer.keys`: key generation and loading (RSA-PSS-3072, Ed25519, ECDSA P-256), fingerprints, Keyring.
* :mod:`plora.signer.dsse`: DSSE envelopes for ANY signed record kind (payload type
  ``application/vnd.plora.<kind>.v<N>+json``, PAE), their strict JSON form, and quorum verification.
* :mod:`plora.signer.plasmid`: a plasmid's detached envelope ``plora.sig.json`` over the canonical manifest.
* :mod:`plora.signer.oms`: OpenSSF model-signing bundles (``model.sig``), through the real ``model_signing``.

Failure codes are strings equal to :class:`plora.gate.reasons.Reason` values: MANIFEST_MISSING, SCHEMA_INVALID,
ARTIFACT_SHA_MISMATCH, CONFIG_SHA_MISMATCH, SIGNATURE_MISSING, SIGNATURE_LEGACY, ENVELOPE_INVALID,
PAYLOAD_TYPE_MISMATCH, SIGNATURE_INVALID, SIGNER_UNTRUSTED, QUORUM_NOT_MET.
"""

from plora.signer.dsse import (
    Envelope,
    EnvelopeError,
    EnvelopeSignature,
    Tally,
    VerifyResult,
    loads_envelope,
    pae,
    payload_type,
    read_envelope,
    sign_envelope,
    verify_envelope,
    write_envelope,
)
from plora.signer.keys import (
    KEY_ALGOS,
    Keyring,
    PrivateKey,
    PublicKey,
    algorithm_name,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_bytes,
    verify_bytes,
)
from plora.signer.plasmid import (
    PLASMID_PAYLOAD_TYPE,
    SignOutcome,
    check_files,
    check_signatures,
    sign_plasmid,
    verify_plasmid,
)

__all__ = [
    "KEY_ALGOS",
    "PLASMID_PAYLOAD_TYPE",
    "Envelope",
    "EnvelopeError",
    "EnvelopeSignature",
    "Keyring",
    "PrivateKey",
    "PublicKey",
    "SignOutcome",
    "Tally",
    "VerifyResult",
    "algorithm_name",
    "check_files",
    "check_signatures",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "loads_envelope",
    "pae",
    "payload_type",
    "read_envelope",
    "sign_bytes",
    "sign_envelope",
    "sign_plasmid",
    "verify_bytes",
    "verify_envelope",
    "verify_plasmid",
    "write_envelope",
]
