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

from dataclasses import dataclass

import networkx as nx
import numpy as np

from plora.swarm.engine import INVENTORY_ENTRY_BYTES, INVENTORY_HEADER_BYTES, EngineInput, draw_round


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

    def choose(offered: set[int], offset: int) -> list[int]:
        order = [(offset + j) % width for j in range(width)] if limited else list(range(width))
        picked = [p for p in order if p in offered]
        return picked[: inp.max_fetch] if limited else picked

    def can_change() -> bool:
        """Some neighbour offers a plasmid that an agent neither holds nor has rejected."""
        return any(holds[v] - holds[a] - rejected[a] for a in range(n) for v in nbrs[a])

    rounds = 0
    quiescent = not can_change()
    while rounds < inp.rounds and not quiescent:
        rounds += 1
        draws = draw_round(rng, n, width, limited)
        new_holds = [set(h) for h in holds]
        new_rejected = [set(r) for r in rejected]
        offers = 0
        for a in active:
            v = nbrs[a][int(draws[0][a] * len(nbrs[a]))]
            total_bytes += 2 * INVENTORY_HEADER_BYTES + INVENTORY_ENTRY_BYTES * (len(holds[a]) + len(holds[v]))
            sides = ((a, v, draws[1][a] if limited else 0), (v, a, draws[2][a] if limited else 0))
            for receiver, sender, offset in sides:
                offered = holds[sender] - holds[receiver] - rejected[receiver]
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
        holds, rejected = new_holds, new_rejected
        offers_per_round.append(offers)
        quiescent = offers == 0 and not can_change()  # the same stopping rule as the fast engine
    return ReferenceResult(holds, rejected, accepted, refused, origin, total_bytes, offers_per_round, rounds)
