"""The policy's ``recall`` section: who may revoke, and peer scoring. Plain pydantic, no crypto, no torch.

    >>> from plora.recall.policy import RecallPolicy
    >>> p = RecallPolicy(peer_scoring=True)
    >>> p.scoring()
    Scoring(penalty_rejected=1.0, penalty_revoked=4.0, decay=0.9, threshold=-3.0)
    >>> RecallPolicy().scoring() is None          # peer scoring is off by default
    True

In a policy file::

    {"signatures": true, "trusted_keys": ["keys/"],
     "recall": {"revocation_keys": ["keys/ops.pub"], "revocation_quorum": 1, "peer_scoring": true}}

A revocation counts only when ``revocation_quorum`` distinct keys of ``revocation_keys`` (default: the policy's
``trusted_keys``) signed it; with no key at all, every revocation is refused (nobody can revoke what you hold).
Scores follow gossipsub v1.1's shape (see :mod:`plora.recall.scoring`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plora.recall.scoring import Scoring


class RecallPolicy(BaseModel):
    """Revocation trust and peer-scoring parameters (the ``recall`` field of :class:`plora.gate.policy.Policy`).

    Strict types, as the policy's: ``true`` is not a quorum, ``"2"`` is not a number."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    revocation_keys: list[str] = Field(
        default=[], description="public keys or folders trusted to sign revocations; empty: the policy's trusted_keys"
    )
    revocation_quorum: int = Field(default=1, ge=1, description="distinct trusted signers a revocation needs")
    peer_scoring: bool = Field(default=False, description="score peers and graylist those below the threshold")
    penalty_rejected: float = Field(
        default=1.0, ge=0, allow_inf_nan=False, description="score a peer loses per plasmid of it the gate rejects"
    )
    penalty_revoked: float = Field(
        default=4.0, ge=0, allow_inf_nan=False, description="score a peer loses per revoked plasmid it offers"
    )
    score_decay: float = Field(
        default=0.9, gt=0, le=1, allow_inf_nan=False, description="per round, scores are multiplied by this (toward 0)"
    )
    graylist_threshold: float = Field(
        default=-3.0, lt=0, allow_inf_nan=False,
        description="a peer whose score is below this is graylisted: nothing is fetched from it",
    )

    @field_validator("revocation_keys", mode="before")
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        if isinstance(v, tuple):
            return list(v)
        return v

    def scoring(self) -> Scoring | None:
        """The scoring parameters, or None when peer scoring is off."""
        if not self.peer_scoring:
            return None
        return Scoring(self.penalty_rejected, self.penalty_revoked, self.score_decay, self.graylist_threshold)
