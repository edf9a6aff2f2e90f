"""Recall in the vectorised engine: revocations as one more bitset per agent, and peer scores per overlay edge.

    >>> import numpy as np
    >>> from plora.swarm.recall import revocation_table, decay_table
    >>> revocation_table([0b01, 0b10], np.uint8).tolist()      # record bitset -> revoked plasmid bitset
    [0, 1, 2, 3]
    >>> decay_table(0.5, 3).tolist()
    [1.0, 0.5, 0.25, 0.125]

The protocol (:mod:`plora.swarm.engine` runs it; :mod:`plora.swarm.reference` implements it literally):

* **Revocations ahead of plasmids.** A contact starts by exchanging revocation ids (32 bytes each, in the inventory
  message) and fetching the signed records a side lacks (their envelope bytes). An obeying agent (honest) then knows
  the union of both sides' revocations for the rest of the contact: it neither offers nor fetches a revoked plasmid.
  At the end of the round every obeying agent keeps the records it received and purges the plasmids they revoke
  (stops offering, quarantines, unloads); it never takes them back. Agents that do not obey (trojan agents) neither
  keep, forward nor apply revocations, and keep offering what they hold.
* **Peer scores** (gossipsub v1.1's idea, :class:`plora.recall.scoring.Scoring`): one float per directed edge,
  the receiver's view of the sender, read and updated lazily as ``score * decay ** (rounds since last update)``.
  A rejected transfer costs the sender ``penalty_rejected``; a revoked plasmid it offers costs ``penalty_revoked``.
  A sender below ``threshold`` is graylisted: its plasmid inventory is not asked for and nothing is fetched from it
  (revocations still flow).

Everything here is O(N) per round (gathers, bitwise ops, one scatter-OR over the agents that learnt something);
nothing is allocated per edge unless peer scoring is on (a float64 score, an int32 round and the reverse-edge index
per directed edge: 16 bytes x 2E).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.recall.scoring import Scoring

MAX_RECORDS = 16  # a record bitset indexes a table of 2**records plasmid masks


@dataclass
class RevocationPlan:
    """Signed revocations entering the swarm: record ``r`` revokes the plasmids of bitmask ``masks[r]``; at the
    start of round ``issue_round[r]`` agent ``origin[r]`` holds it (and purges them). ``obey`` marks the agents that
    keep, forward and apply revocations (honest ones). ``record_bytes`` is each signed envelope's size."""


    masks: list[int]
    issue_round: list[int]
    origin: list[int]
    record_bytes: list[int]
    obey: np.ndarray
    reach: np.ndarray | None = None  # agents the revocations can reach: the engine counts the holders among them

    @property
    def size(self) -> int:
        return len(self.masks)


def decay_table(decay: float, rounds: int) -> np.ndarray:
    """``decay ** k`` for k = 0..rounds (float64). Both engines read scores through this one table, so they agree
    bit for bit."""
    return np.power(np.float64(decay), np.arange(rounds + 1, dtype=np.float64))


def revocation_table(masks: list[int], dtype: Any) -> np.ndarray:
    """Entry ``w`` is the OR of ``masks[r]`` over the bits ``r`` set in ``w``: a record bitset's revoked plasmids."""
    if len(masks) > MAX_RECORDS:
        raise PloraError(f"{len(masks)} revocation records: at most {MAX_RECORDS} in one run")
    words = np.arange(1 << len(masks), dtype=np.int64)
    table = np.zeros(len(words), dtype=dtype)
    for r, m in enumerate(masks):
        table[(words >> r) & 1 == 1] |= dtype(m)
    return table


def reverse_edges(indices: np.ndarray) -> np.ndarray:
    """For CSR position k of edge a->v, the position of v->a. Rows are sorted, so a stable sort by column lists
    the edges in (column, row) order, which is CSR order of the reversed edges. O(E log E), once per run."""
    order = np.argsort(indices, kind="stable")
    return order.astype(np.int32) if len(indices) < 2**31 else order


class RecallState:
    """Revocation state of every agent for one engine run."""

    def __init__(self, plan: RevocationPlan, n: int, dtype: Any, record_dtype: Any) -> None:
        self.plan = plan
        self.rev = np.zeros(n, dtype=record_dtype)
        self.table = revocation_table(plan.masks, dtype)
        self.obey = np.asarray(plan.obey, dtype=bool)
        self.record_bytes = np.asarray(plan.record_bytes, dtype=np.int64)
        self.target = dtype(0)
        for m in plan.masks:
            self.target |= dtype(m)
        self.issued = record_dtype(0)
        self.live = False  # some agent holds a record: only then do rounds pay for revocations
        self.last_issue = max(plan.issue_round, default=0)

    def issue(self, rnd: int, held: np.ndarray) -> int:
        """Hand the records due this round to their origins (obeying ones), who purge at once; returns purges."""
        purged = 0
        for r, (when, who) in enumerate(zip(self.plan.issue_round, self.plan.origin, strict=True)):
            if when == rnd:
                self.issued |= self.rev.dtype.type(1 << r)
                if self.obey[who]:
                    self.rev[who] |= self.rev.dtype.type(1 << r)
                    bad = held[who] & self.table[self.rev[who]]
                    purged += int(np.bitwise_count(bad))
                    held[who] &= ~bad
                    self.live = True
        return purged

    def knowledge(self, partner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(partner's records, plasmids each agent knows revoked in its contact, the same for its partner)."""
        theirs = self.rev[partner]
        both = self.table[self.rev | theirs]
        zero = both.dtype.type(0)
        return theirs, np.where(self.obey, both, zero), np.where(self.obey[partner], both, zero)

    def exchange(self, partner: np.ndarray, theirs: np.ndarray) -> tuple[int, bool]:
        """End of round: obeying agents keep the records they lacked (pulled from, or pushed by, their contact).
        Returns (envelope bytes transferred, whether any record moved)."""
        zero = self.rev.dtype.type(0)
        pulled = np.where(self.obey, theirs & ~self.rev, zero)
        pushed = np.where(self.obey[partner], self.rev & ~theirs, zero)
        width = self.plan.size
        from plora.swarm.engine import bit_counts

        sent = int(bit_counts(pulled, width) @ self.record_bytes) + int(bit_counts(pushed, width) @ self.record_bytes)
        moved = bool(pulled.any())
        self.rev |= pulled
        nz = np.flatnonzero(pushed)
        if len(nz):
            np.bitwise_or.at(self.rev, partner[nz], pushed[nz])
        return sent, moved or len(nz) > 0

    def purge(self, held: np.ndarray) -> int:
        """Drop every revoked plasmid an agent holds; returns how many (agent, plasmid) pairs were purged."""
        bad = held & self.table[self.rev]
        count = int(np.bitwise_count(bad).sum(dtype=np.int64))
        if count:
            held &= ~bad
        return count

    def known(self) -> np.ndarray:
        """Plasmids each agent knows revoked (never wanted again)."""
        return self.table[self.rev]

    def can_spread(self, graph: Any) -> bool:
        """True while some edge can still carry a record to an obeying agent that lacks it."""
        from plora.swarm.engine import _can_change

        full = self.rev.dtype.type((1 << self.plan.size) - 1)
        wanted = np.where(self.obey, ~self.rev & full, self.rev.dtype.type(0))
        return _can_change(graph, self.rev, wanted)


class ScoreBook:
    """Peer scores per directed edge (CSR position = the receiver's view of that neighbour), updated lazily."""

    def __init__(self, scoring: Scoring, indices: np.ndarray, rounds: int) -> None:
        self.s = scoring
        self.score = np.zeros(len(indices), dtype=np.float64)
        self.last = np.zeros(len(indices), dtype=np.int32)
        self.reverse = reverse_edges(indices)
        self.decay = decay_table(scoring.decay, rounds)
        self.penalties = 0

    def views(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each agent's edge to its contact, the contact's edge back to it)."""
        return pos, self.reverse[pos]

    def graylisted(self, rnd: int, edges: np.ndarray) -> np.ndarray:
        return self.score[edges] * self.decay[rnd - self.last[edges]] < self.s.threshold

    def penalise(self, rnd: int, pull: tuple[np.ndarray, np.ndarray, np.ndarray],
                 push: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Apply this round's penalties: each side is (edges, rejected transfers, revoked plasmids offered)."""
        edges, values = [], []
        for e, rejected, revoked in (pull, push):
            v = (rejected.astype(np.float64) * self.s.penalty_rejected
                 + revoked.astype(np.float64) * self.s.penalty_revoked)
            hit = np.flatnonzero(v)
            edges.append(e[hit])
            values.append(v[hit])
        e, v = np.concatenate(edges), np.concatenate(values)
        if len(e) == 0:
            return
        self.penalties += len(e)
        # bincount adds in input order: an edge's pull penalty, then its push one, as the reference engine sums them
        u, inv = np.unique(e, return_inverse=True)
        total = np.bincount(inv, weights=v)
        self.score[u] = self.score[u] * self.decay[rnd - self.last[u]] - total
        self.last[u] = rnd
