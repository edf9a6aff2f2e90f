"""What an agent serves during a gossip round: its plasmids and revocations as they stood when the round began.

    >>> from plora.swarm.agent_round import RoundSnapshot
    >>> snap = RoundSnapshot()
    >>> snap.serves("legal", "ab12"), snap.lists("r1")        # before any round: everything held
    (True, True)
    >>> snap.begin(3, lambda: ({"legal": "ab12"}, ["r1"]))
    True
    >>> snap.serves("legal", "ab12"), snap.serves("medical", "cd34"), snap.lists("r2")   # medical came in round 3
    (True, False, False)
    >>> snap.begin(3, lambda: ({}, [])), snap.begin(2, lambda: ({}, []))   # a round is frozen once, never re-opened
    (False, False)

Swarm Sim v2's engine decides a round from the state at its start: a plasmid (or revocation) accepted in round r is
offered from round r+1 on, never passed on within r. The networked agents run a round's contacts at once (Step(r) on
every agent, then a barrier), so an agent serving what it holds NOW would pass on, or not, what it received earlier
in the same round, depending on timing: runs with one seed would differ. So an agent freezes what it serves at its
FIRST sight of round r, whichever comes first: its own Step(r), a peer's GetInventory(round r) or Offer(round r).
Nothing of round r can have reached it before that (the previous round's transfers all ended at the barrier, and a
round-r transfer to it starts with one of those three calls), so the snapshot is exactly its state at the barrier.
During the round its inventories (pulled, and pushed in its Offer) list only the snapshot, and Fetch serves only
snapshot plasmids; one purged meanwhile (revoked) is no longer listed. Revocations the swarm operator issues at the
agent with Step(r) join the round's snapshot: issued before its contact, as the sim issues them at the round's start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Holdings = Callable[[], tuple[dict[str, str], list[str]]]  # () -> ({plasmid id: artifact sha256}, revocation ids)


class RoundSnapshot:
    """The round being served and what it serves; before the first round, everything held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.round: int | None = None
        self._plasmids: dict[str, str] | None = None
        self._revocations: set[str] = set()

    def begin(self, round_: int, holdings: Holdings) -> bool:
        """Freeze ``holdings()`` for ``round_`` unless this or a later round is already frozen; True when it froze.
        Concurrent callers for the same round wait until the snapshot is taken."""
        with self._lock:
            if self.round is not None and round_ <= self.round:
                return False
            plasmids, revocations = holdings()
            self.round, self._plasmids, self._revocations = round_, dict(plasmids), set(revocations)
            return True

    def add_revocation(self, rid: str) -> None:
        """A revocation issued at this agent for the current round (by the swarm operator): listed at once."""
        with self._lock:
            self._revocations.add(rid)

    def serves(self, plasmid_id: str, sha256: str) -> bool:
        with self._lock:
            return self._plasmids is None or self._plasmids.get(plasmid_id) == sha256

    def lists(self, rid: str) -> bool:
        with self._lock:
            return self._plasmids is None or rid in self._revocations
