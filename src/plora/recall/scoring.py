"""Peer scores, gossipsub v1.1's way: misbehaving peers lose score, and below a threshold they are graylisted.

    >>> from plora.recall.scoring import PeerScores, Scoring
    >>> book = PeerScores(Scoring(penalty_rejected=1.0, penalty_revoked=4.0, decay=0.9, threshold=-3.0))
    >>> book.penalise("10.0.0.2:50051", rnd=1, revoked=1)     # it offered a plasmid we know is revoked
    >>> book.score("10.0.0.2:50051", rnd=1), book.graylisted("10.0.0.2:50051", rnd=1)
    (-4.0, True)
    >>> round(book.score("10.0.0.2:50051", rnd=4), 3), book.graylisted("10.0.0.2:50051", rnd=4)   # it decays back
    (-2.916, False)

A receiver keeps one score per peer, starting at 0: a plasmid fetched from the peer that the receiver's gate
rejects costs ``penalty_rejected``; a revoked plasmid in the peer's inventory (once the contact's revocations are
exchanged) costs ``penalty_revoked``. Scores decay toward 0, ``score * decay ** rounds``, read lazily. A peer whose
score is below ``threshold`` is graylisted: its inventory is not asked for and nothing is fetched from it, while
revocations still flow both ways (they are signed, small, and what purges). The swarm engine keeps the same score
per directed overlay edge (:class:`plora.swarm.recall.ScoreBook`) with the same arithmetic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Scoring:
    """Peer-scoring parameters (held by the policy's ``recall`` section, :class:`plora.recall.policy.RecallPolicy`)."""

    penalty_rejected: float
    penalty_revoked: float
    decay: float
    threshold: float


class PeerScores:
    """Scores of the peers one agent talks to, by address; thread-safe (gRPC handlers and rounds share it)."""

    def __init__(self, scoring: Scoring) -> None:
        self.s = scoring
        self._scores: dict[str, tuple[float, int]] = {}  # peer -> (score, round of its last update)
        self._lock = threading.Lock()

    def score(self, peer: str, rnd: int) -> float:
        with self._lock:
            value, last = self._scores.get(peer, (0.0, rnd))
        return value * self.s.decay ** max(rnd - last, 0)

    def graylisted(self, peer: str, rnd: int) -> bool:
        return self.score(peer, rnd) < self.s.threshold

    def penalise(self, peer: str, rnd: int, rejected: int = 0, revoked: int = 0) -> None:
        cost = rejected * self.s.penalty_rejected + revoked * self.s.penalty_revoked
        if not cost:
            return
        with self._lock:
            value, last = self._scores.get(peer, (0.0, rnd))
            self._scores[peer] = (value * self.s.decay ** max(rnd - last, 0) - cost, rnd)

    def snapshot(self, rnd: int) -> dict[str, float]:
        """Every scored peer's score now (for round records)."""
        with self._lock:
            peers = list(self._scores)
        return {p: round(self.score(p, rnd), 6) for p in peers}
