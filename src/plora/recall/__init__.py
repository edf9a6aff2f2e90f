"""Recall: signed revocations that receivers obey, rollback protection, and peer scoring (no torch).

    >>> from plora.recall import RecallStore, artifact_target, issue_revocation, verify_revocation
    >>> from plora.signer import Keyring
    >>> env = issue_revocation(artifact_target("out/legal"), "backdoor found", "keys/alice", out="revoke-legal.json")
    >>> verify_revocation("revoke-legal.json", Keyring.load(["keys/"])).ok
    True

| module | what |
|---|---|
| ``record`` | the revocation record (strict schema), its DSSE payload type, issue / cosign / verify |
| ``store`` | a receiver's state: revocations obeyed (deduplicated), rollback marks, quarantine; a fetch check |
| ``policy`` | the policy's ``recall`` section: revocation keys and quorum, peer-scoring parameters |
| ``scoring`` | peer scores with decay and a graylist threshold (gossipsub v1.1's shape) |
| ``live`` | unload revoked plasmids from a live model (``plora.loader.remove``, bit for bit); imports torch |

The swarm uses all of it: :mod:`plora.swarm.recall` (the engine's bitsets), :mod:`plora.swarm.agent` (real agents).
"""

import importlib
from typing import Any

# Lazy (PEP 562): plora.gate.policy imports plora.recall.policy, which must not pull in cryptography.
_EXPORTS = {
    "ArtifactTarget": "record",
    "REVOCATION_PAYLOAD_TYPE": "record",
    "Revocation": "record",
    "RevocationCheck": "record",
    "RevocationError": "record",
    "SignerTarget": "record",
    "artifact_target": "record",
    "cosign_revocation": "record",
    "issue_revocation": "record",
    "read_revocation": "record",
    "revocation_id": "record",
    "signer_target": "record",
    "verify_revocation": "record",
    "RecallStore": "store",
    "Receipt": "store",
    "RecallPolicy": "policy",
    "PeerScores": "scoring",
    "Scoring": "scoring",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
