"""A slow, obviously correct push-pull engine (Python sets, one contact at a time) to check the vectorised one.

    >>> import numpy as np
    >>> from plora.swarm.engine import EngineInput, PoolView, run_engine
    >>> from plora.swarm.graphs import make_graph
    >>> from plora.swarm.reference import run_reference
    >>> pool = PoolView(domains=["legal"], domain_of=np.array([0, 0]), trojan=np.array([False, True]),
    ...                 artifact_bytes=np.array([1000, 1000]), manifest_bytes=np.array([900, 900]))
    >>> held = np.zeros(30, np.uint8); held[0] = 1; held[1] = 2
    >>> inp = EngineInput(make_graph("er", 30, p=0.2, seed=1), pool, accept=np.array([[True, False]]),
    ...                   holdings=held, honest=np.arange(30) != 1, rounds=20, seed=0)
    >>> fast, ref = run_engine(inp), run_reference(inp)
    >>> [int(h) for h in fast.holdings] == [sum(1 << p for p in s) for s in ref.holdings]
    True

It implements the protocol of :mod:`plora.swarm.engine` literally: per round it copies the state, walks the agents
in order, lets each contact a neighbour and lets both sides fetch and screen, writing only into the copy. It consumes
the SAME random draws (:func:`plora.swarm.engine.draw_round`, in the same order), so on a small graph the two engines
must agree exactly: holdings, rejections, per-plasmid gate counts, bytes and the per-round series. Neighbour lists
come from networkx, independently of the CSR arrays the fast engine reads. For tests only: O(rounds * N * P).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from plora.swarm.engine import INVENTORY_ENTRY_BYTES, INVENTORY_HEADER_BYTES, EngineInput, draw_round
from plora.swarm.recall import decay_table


@dataclass
class ReferenceResult:
    holdings: list[set[int]]
    rejected: list[set[int]]
    accepted: dict[tuple[int, int], int]  # (policy, plasmid) -> transfers accepted
    refused: dict[tuple[int, int], int]
    received_from: list[dict[int, int]]  # agent -> plasmid -> the agent it first came from (provenance)
    bytes_total: int
    offers_per_round: list[int]
    rounds_run: int
    revocations: list[set[int]] = field(default_factory=list)  # records each agent holds
    purged: int = 0
    graylisted: int = 0
    scores: dict[tuple[int, int], float] = field(default_factory=dict)  # (receiver, sender) -> score, last update


def run_reference(inp: EngineInput) -> ReferenceResult:
    n, width = inp.graph.n, inp.pool.size
    nxg = nx.Graph()
    nxg.add_nodes_from(range(n))
    nxg.add_edges_from(map(tuple, inp.graph.edge_list().tolist()))
    nbrs = [sorted(nxg.neighbors(a)) for a in range(n)]
    holds = [{p for p in range(width) if (int(inp.holdings[a]) >> p) & 1} for a in range(n)]
    rejected: list[set[int]] = [set() for _ in range(n)]
    origin: list[dict[int, int]] = [{p: a for p in holds[a]} for a in range(n)]
    policy = [0 if inp.policy is None else int(inp.policy[a]) for a in range(n)]
    accept = np.asarray(inp.accept, dtype=bool)
    accepted: dict[tuple[int, int], int] = {}
    refused: dict[tuple[int, int], int] = {}
    limited = inp.max_fetch is not None and inp.max_fetch < width
    rng = np.random.default_rng(inp.seed)
    active = [a for a in range(n) if nbrs[a]]
    total_bytes = 0
    offers_per_round: list[int] = []
    plan, sc = inp.revocations, inp.scoring
    records = plan.size if plan is not None else 0
    obey = [bool(plan.obey[a]) if plan is not None else False for a in range(n)]
    rev: list[set[int]] = [set() for _ in range(n)]
    score: dict[tuple[int, int], tuple[float, int]] = {}  # (receiver, sender) -> (score, round of last update)
    decay = decay_table(sc.decay, inp.rounds) if sc is not None else None
    purged = graylisted = 0

    def revoked(recs: set[int]) -> set[int]:
        return {p for r in recs for p in range(width) if (plan.masks[r] >> p) & 1} if recs else set()

    def gray(receiver: int, sender: int, rnd: int) -> bool:
        if sc is None:
            return False
        value, last = score.get((receiver, sender), (0.0, 0))
        return value * decay[rnd - last] < sc.threshold

    def choose(offered: set[int], offset: int) -> list[int]:
        order = [(offset + j) % width for j in range(width)] if limited else list(range(width))
        picked = [p for p in order if p in offered]
        return picked[: inp.max_fetch] if limited else picked

    def can_change() -> bool:
        """Some neighbour offers a plasmid that an agent neither holds, nor rejected, nor knows revoked; or a
        revocation can still reach an obeying agent."""
        return any(holds[v] - holds[a] - rejected[a] - revoked(rev[a]) for a in range(n) for v in nbrs[a]) or any(
            obey[a] and rev[v] - rev[a] for a in range(n) for v in nbrs[a])

    rounds = 0
    quiescent = records == 0 and not can_change()
    while rounds < inp.rounds and not quiescent:
        rounds += 1
        for r in range(records):  # a record due this round: its origin holds it (and purges) before any contact
            who = plan.origin[r]
            if plan.issue_round[r] == rounds and obey[who]:
                rev[who].add(r)
                purged += len(holds[who] & revoked(rev[who]))
                holds[who] -= revoked(rev[who])
        draws = draw_round(rng, n, width, limited)
        new_holds = [set(h) for h in holds]
        new_rejected = [set(r) for r in rejected]
        new_rev = [set(r) for r in rev]
        penalty: dict[tuple[int, int], list[float]] = {}  # (receiver, sender) -> [pull side, push side]
        offers = rev_moved = 0
        for a in active:
            v = nbrs[a][int(draws[0][a] * len(nbrs[a]))]
            # revocations first: both sides list their records, each obeying side takes what it lacks
            both = revoked(rev[a] | rev[v])
            known = {a: both if obey[a] else set(), v: both if obey[v] else set()}
            offer = {a: holds[a] - known[a], v: holds[v] - known[v]}
            total_bytes += 2 * INVENTORY_HEADER_BYTES + INVENTORY_ENTRY_BYTES * (len(rev[a]) + len(rev[v]))
            for receiver, sender in ((a, v), (v, a)):
                if obey[receiver]:
                    for r in rev[sender] - rev[receiver]:
                        new_rev[receiver].add(r)
                        total_bytes += int(plan.record_bytes[r])
                        rev_moved += 1
            sides = ((a, v, draws[1][a] if limited else 0, 0), (v, a, draws[2][a] if limited else 0, 1))
            for receiver, sender, offset, side in sides:
                if gray(receiver, sender, rounds):
                    graylisted += 1
                    continue
                total_bytes += INVENTORY_ENTRY_BYTES * len(offer[sender])
                bad = 0
                offered = offer[sender] - holds[receiver] - rejected[receiver] - known[receiver]
                for p in choose(offered, int(offset)):
                    offers += 1
                    total_bytes += int(inp.pool.manifest_bytes[p]) + int(inp.pool.artifact_bytes[p])
                    key = (policy[receiver], p)
                    if accept[policy[receiver], p]:
                        accepted[key] = accepted.get(key, 0) + 1
                        new_holds[receiver].add(p)
                        origin[receiver].setdefault(p, sender)
                    else:
                        refused[key] = refused.get(key, 0) + 1
                        new_rejected[receiver].add(p)
                        bad += 1
                if sc is not None:
                    value = bad * sc.penalty_rejected + len(offer[sender] & known[receiver]) * sc.penalty_revoked
                    if value:
                        penalty.setdefault((receiver, sender), [0.0, 0.0])[side] = value
        holds, rejected, rev = new_holds, new_rejected, new_rev
        for a in range(n):  # what a revocation names is dropped at the end of the round
            purged += len(holds[a] & revoked(rev[a]))
            holds[a] -= revoked(rev[a])
        for edge, (pull, push) in penalty.items():  # old score decayed to now, minus pull then push penalties
            value, last = score.get(edge, (0.0, 0))
            score[edge] = (value * decay[rounds - last] - (0.0 + pull + push), rounds)
        offers_per_round.append(offers)
        pending = plan is not None and rounds < max(plan.issue_round, default=0)
        quiescent = offers == 0 and not rev_moved and not pending and not can_change()  # the fast engine's rule
    return ReferenceResult(holds, rejected, accepted, refused, origin, total_bytes, offers_per_round, rounds, rev,
                           purged, graylisted, {k: v for k, (v, _) in score.items()})
