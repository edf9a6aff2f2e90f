"""Vectorised synchronous push-pull gossip of plasmids, with a per-receiver gate, for up to 10^7 agents.

    >>> import numpy as np
    >>> from plora.swarm.engine import EngineInput, PoolView, run_engine
    >>> from plora.swarm.graphs import make_graph
    >>> g = make_graph("er", 100, p=0.1, seed=1)
    >>> pool = PoolView(domains=["legal"], domain_of=np.array([0, 0]), trojan=np.array([False, True]),
    ...                 artifact_bytes=np.array([1000, 1000]), manifest_bytes=np.array([900, 900]))
    >>> held = np.zeros(100, np.uint8); held[0] = 1; held[1] = 2            # agent 1 offers the trojan
    >>> res = run_engine(EngineInput(g, pool, accept=np.array([[True, False]]), holdings=held,
    ...                              honest=np.arange(100) != 1, rounds=50, seed=0))
    >>> res.rounds_run > 0, int(res.accepted.sum()) > 0, int(res.accepted[0, 1])     # trojan never accepted
    (True, True, 0)

The model (one round, every agent at once, all decisions from the state at the start of the round):

1. every agent ``a`` with at least one neighbour contacts one neighbour ``v``, uniform among its neighbours
   (``v = neighbours(a)[floor(u_a * deg(a))]`` with ``u_a`` uniform in [0, 1));
2. ``a`` and ``v`` send each other their inventories (the SHA-256 of every plasmid held);
3. each side fetches the plasmids the other offers that it neither holds nor has already rejected, at most
   ``max_fetch`` per contact (when more are on offer, it takes them in cyclic plasmid order starting at a random
   offset drawn per contact and side);
4. each fetched plasmid goes through the RECEIVER's gate (``accept[policy[receiver], plasmid]``); accepted ones are
   held and offered from the next round on, rejected ones are remembered and never fetched again.

An agent contacted by several others in one round serves each of them, and may receive the same plasmid from two
contacts in one round: both transfers are counted (bytes and gate outcomes), as they would be on a real network.

State is one bitset per agent (uint8/16/32/64: one bit per pool plasmid), so a round is a handful of gathers,
bitwise operations and one scatter-OR over N contacts. The run stops after ``rounds`` rounds or as soon as no edge
can carry anything any more (checked over every edge when a round moved nothing), never waiting for agents that no
source can reach. Bytes: each contact costs two inventories of ``INVENTORY_HEADER_BYTES + INVENTORY_ENTRY_BYTES *
held`` bytes; each transfer costs the plasmid's manifest bytes (plora.yml + adapter_config.json) plus its artifact
bytes (adapter_model.safetensors), whether the gate then accepts it or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.swarm.graphs import Graph
from plora.swarm.recall import RecallState, RevocationPlan, ScoreBook, Scoring

INVENTORY_HEADER_BYTES = 16
INVENTORY_ENTRY_BYTES = 32  # one SHA-256 per plasmid held


@dataclass
class PoolView:
    """What the engine knows about the pool: bit ``i`` of a holding is plasmid ``i``. ``trojan`` is the ground
    truth; the engine uses it only to count outcomes (coverage, prevalence, FN/FP), never to decide anything."""

    domains: list[str]
    domain_of: np.ndarray
    trojan: np.ndarray
    artifact_bytes: np.ndarray
    manifest_bytes: np.ndarray

    @property
    def size(self) -> int:
        return len(self.domain_of)

    def mask(self, select: np.ndarray, dtype: Any) -> Any:
        bits = 0
        for i in np.flatnonzero(select):
            bits |= 1 << int(i)
        return dtype(bits)

    def clean_masks(self, dtype: Any) -> list[Any]:
        return [self.mask((self.domain_of == d) & ~self.trojan, dtype) for d in range(len(self.domains))]


@dataclass
class EngineInput:
    graph: Graph
    pool: PoolView
    accept: np.ndarray  # bool (policies, plasmids): the gate verdicts (all True with security off)
    holdings: np.ndarray  # initial bitset per agent (already held, never screened)
    honest: np.ndarray  # bool per agent; coverage and prevalence are measured over honest agents
    rounds: int
    seed: int
    max_fetch: int | None = None
    policy: np.ndarray | None = None  # uint8 policy index per agent; None: everyone uses policy 0
    reachable: list[np.ndarray] | None = None  # bool per agent per domain: honest agents a source can reach
    progress: Callable[[int, dict[str, Any]], None] | None = None
    revocations: RevocationPlan | None = None
    scoring: Scoring | None = None
    record_recall: bool = False  # a per-round recall entry even with neither revocations nor scoring (compared arms)


@dataclass
class EngineResult:
    holdings: np.ndarray
    rejected: np.ndarray
    series: list[dict[str, Any]]
    accepted: np.ndarray  # int64 (policies, plasmids): transfers the gate accepted
    refused: np.ndarray  # int64 (policies, plasmids): transfers the gate rejected
    bytes_inventory: int
    bytes_manifest: int
    bytes_artifact: int
    contacts: int
    rounds_run: int
    quiescent: bool
    rounds_to_full: list[int | None]
    seconds_per_round: list[float] = field(default_factory=list)
    revocations_held: np.ndarray | None = None  # record bitset per agent (with a RevocationPlan)
    bytes_revocation: int = 0  # signed revocation envelopes transferred
    purged: int = 0  # (agent, plasmid) pairs removed by a revocation
    graylisted: int = 0  # contact sides skipped because the receiver graylisted the sender
    scores: np.ndarray | None = None  # with peer scoring: the receiver's score of each CSR edge, as last updated


def bitset_dtype(plasmids: int) -> Any:
    for bits, dtype in ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64)):
        if plasmids <= bits:
            return dtype
    raise PloraError(f"a pool of {plasmids} plasmids is more than the 64 one bitset word holds")


def draw_round(rng: np.random.Generator, agents: int, plasmids: int, limited: bool) -> tuple[np.ndarray, ...]:
    """The random choices of one round: a uniform per agent (its neighbour choice) and, when fetches are capped,
    the random start offsets of the pull and push sides, per agent. The reference engine consumes the same draws."""
    u = rng.random(agents)
    if not limited:
        return (u,)
    off_pull = rng.integers(0, plasmids, agents, dtype=np.int64)
    off_push = rng.integers(0, plasmids, agents, dtype=np.int64)
    return u, off_pull, off_push


def _limit(x: np.ndarray, offsets: np.ndarray, k: int, width: int, dtype: Any) -> np.ndarray:
    """Keep at most ``k`` set bits of each word: the first ones in cyclic order from bit ``offset``."""
    sel = np.flatnonzero(np.bitwise_count(x) > k)
    if len(sel) == 0:
        return x
    full = dtype((1 << width) - 1) if width < 64 else dtype(np.iinfo(dtype).max)
    w = x[sel]
    off = offsets[sel].astype(dtype)
    back = (dtype(width) - off).astype(dtype)
    rot = ((w >> off) | (w << back)) & full  # bit j of rot is bit (j + off) mod width of w
    kept = np.zeros_like(rot)
    for _ in range(k):
        low = rot & (~rot + dtype(1))
        kept |= low
        rot ^= low
    out = x.copy()
    out[sel] = ((kept << off) | (kept >> back)) & full
    return out


def bit_counts(words: np.ndarray, width: int) -> np.ndarray:
    """How many of ``words`` have each bit set (int64, length ``width``)."""
    if len(words) == 0:
        return np.zeros(width, dtype=np.int64)
    if width <= 16:
        # a histogram of the values, then bits per value: one O(n) pass instead of an (n, bits) unpack
        hist = np.bincount(words.astype(np.intp, copy=False), minlength=1 << width)
        return hist @ _bit_table(width)
    as_bytes = words.astype(words.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(len(words), -1)
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")
    return bits.sum(axis=0, dtype=np.int64)[:width]


def _bit_table(width: int) -> np.ndarray:
    values = np.arange(1 << width, dtype=np.int64)
    return ((values[:, None] >> np.arange(width)) & 1).astype(np.int64)


def _can_change(graph: Graph, held: np.ndarray, wanted: np.ndarray) -> bool:
    """True while some edge can carry a plasmid to an agent that lacks it: ``wanted`` holds, per agent, the bits it
    neither holds nor has rejected. Only agents that still lack something are looked at, in blocks, stopping at the
    first hit (at the start, the first block hits)."""
    rows = np.flatnonzero(wanted)
    block = 1 << 16
    for i in range(0, len(rows), block):
        r = rows[i : i + block]
        starts = graph.indptr[r]
        deg = graph.indptr[r + 1] - starts
        total = int(deg.sum())
        if total == 0:
            continue
        # positions of the blocks' neighbour lists, concatenated: start of each list + offset within it
        first = np.cumsum(deg) - deg
        pos = np.repeat(starts - first, deg) + np.arange(total)
        if np.any(held[graph.indices[pos]] & np.repeat(wanted[r], deg)):
            return True
    return False


def run_engine(inp: EngineInput) -> EngineResult:
    """Run the push-pull gossip described in the module docstring; O(rounds * N) time, O(N + E) memory."""
    g, pool = inp.graph, inp.pool
    n, width = g.n, pool.size
    dtype = bitset_dtype(width)
    accept = np.asarray(inp.accept, dtype=bool)
    if accept.ndim != 2 or accept.shape[1] != width:
        raise PloraError(f"verdicts must be (policies, {width}), got {accept.shape}")
    groups = accept.shape[0]
    accept_bits = np.array([pool.mask(row, dtype) for row in accept], dtype=dtype)
    if groups > 1 and inp.policy is None:
        raise PloraError("several policies need a policy index per agent")
    # the gate's accepted bits per agent: a scalar when everyone shares one policy
    acc = accept_bits[0] if groups == 1 else accept_bits[np.asarray(inp.policy)]
    held = np.array(inp.holdings, dtype=dtype, copy=True)
    rejected = np.zeros_like(held)
    honest = np.asarray(inp.honest, dtype=bool)
    ndom = len(pool.domains)
    clean = pool.clean_masks(dtype)
    trojan_bits = pool.mask(pool.trojan, dtype)
    reach = inp.reachable if inp.reachable is not None else [honest] * ndom
    reach_count = [int(np.count_nonzero(r)) for r in reach]
    n_honest = max(int(np.count_nonzero(honest)), 1)
    art = np.asarray(pool.artifact_bytes, dtype=np.int64)
    man = np.asarray(pool.manifest_bytes, dtype=np.int64)

    deg = g.degrees
    degf = deg.astype(np.float64)
    index_dtype = np.int32 if len(g.indices) < 2**31 else np.int64
    start = g.indptr[:-1].astype(index_dtype)
    isolated = np.flatnonzero(deg == 0)
    contacts = n - len(isolated)
    limited = inp.max_fetch is not None and inp.max_fetch < width
    rng = np.random.default_rng(inp.seed)

    recall = None
    if inp.revocations is not None and inp.revocations.size:
        recall = RecallState(inp.revocations, n, dtype, bitset_dtype(inp.revocations.size))
        # what an agent injects into its live model: the plasmids of its own domain (agent i's domain is i mod D)
        own = np.array([pool.mask(pool.domain_of == d, dtype) for d in range(ndom)], dtype=dtype)[np.arange(n) % ndom]
    book = ScoreBook(inp.scoring, g.indices, inp.rounds) if inp.scoring is not None and len(g.indices) else None

    accepted = np.zeros((groups, width), dtype=np.int64)
    refused = np.zeros((groups, width), dtype=np.int64)
    totals = {"inventory": 0, "manifest": 0, "artifact": 0, "revocation": 0, "purged": 0, "graylisted": 0}
    rounds_to_full: list[int | None] = [None] * ndom
    series: list[dict[str, Any]] = []
    timings: list[float] = []

    def observe(rnd: int, stats: dict[str, int], extra: dict[str, Any] | None) -> None:
        cov, cov_reach = {}, {}
        for d, name in enumerate(pool.domains):
            has = (held & clean[d]) != 0
            cov[name] = round(float(np.count_nonzero(has & honest)) / n_honest, 6)
            got = int(np.count_nonzero(has & reach[d]))
            cov_reach[name] = round(float(got) / reach_count[d], 6) if reach_count[d] else None
            if rounds_to_full[d] is None and reach_count[d] and got == reach_count[d]:
                rounds_to_full[d] = rnd
        prevalence = np.count_nonzero(((held & trojan_bits) != 0) & honest)
        row = {
            "round": rnd,
            "coverage": cov,
            "coverage_reachable": cov_reach,
            "trojan_prevalence": round(float(prevalence) / n_honest, 6),
            **stats,
        }
        if extra is not None:
            extra = {"trojan_holders": int(prevalence), **extra}
            if recall is not None:
                target = held & recall.target
                issued = recall.issued
                holding = (target != 0) & honest
                holders = int(np.count_nonzero(holding))
                injectors = int(np.count_nonzero(((target & own) != 0) & honest))
                informed = int(np.count_nonzero(((recall.rev & issued) == issued) & honest)) if issued else 0
                reach_rev = recall.plan.reach
                extra = {
                    "holding": round(holders / n_honest, 6),
                    "injecting": round(injectors / n_honest, 6),
                    "revocation": round(informed / n_honest, 6),
                    "holders": holders,
                    "injectors": injectors,
                    "informed": informed,
                    "holders_reachable": holders if reach_rev is None else int(np.count_nonzero(holding & reach_rev)),
                    **extra,
                }
            row["recall"] = extra
        series.append(row)
        if inp.progress is not None:
            inp.progress(rnd, row)

    everything = pool.mask(np.ones(width, dtype=bool), dtype)

    def wanted() -> np.ndarray:
        known = held | rejected
        if recall is not None and recall.live:
            known |= recall.known()
        return ~known & everything

    quiet = {"purged": 0, "graylisted": 0, "revocation_bytes": 0}
    record_recall = recall is not None or book is not None or inp.record_recall
    observe(0, {"contacts": 0, "offers": 0, "accepted": 0, "rejected": 0, "bytes": 0},
            dict(quiet) if record_recall else None)
    pending = recall is not None and recall.last_issue >= 1
    quiescent = not pending and not _can_change(g, held, wanted())
    rnd = 0
    while not quiescent and rnd < inp.rounds:
        rnd += 1
        t0 = time.perf_counter()
        purged = recall.issue(rnd, held) if recall is not None else 0
        draws = draw_round(rng, n, width, limited)
        pos = start + (draws[0] * degf).astype(index_dtype)
        if len(isolated):
            pos[isolated] = 0
        partner = g.indices[pos] if len(g.indices) else np.arange(n, dtype=index_dtype)
        if len(isolated):
            partner[isolated] = isolated  # no contact: talking to oneself moves nothing and is not counted
        known = held | rejected
        hv = held[partner]
        offer_v, offer_a = hv, held  # what each side lists to the other (after the contact's revocations)
        live = recall is not None and recall.live
        if live:
            theirs, k_a, k_v = recall.knowledge(partner)
            offer_v, offer_a = hv & ~k_v, held & ~k_a
            pull = offer_v & ~known & ~k_a  # what each agent fetches from the neighbour it contacted
            push = offer_a & ~known[partner] & ~k_v  # what that neighbour fetches from it
        else:
            pull = hv & ~known
            push = held & ~known[partner]
        del known
        gray = 0
        if book is not None:
            e_pull, e_push = book.views(pos)
            gray_pull, gray_push = book.graylisted(rnd, e_pull), book.graylisted(rnd, e_push)
            if len(isolated):
                gray_pull[isolated] = gray_push[isolated] = False
            pull[gray_pull] = 0
            push[gray_push] = 0
            gray = int(np.count_nonzero(gray_pull) + np.count_nonzero(gray_push))
            # a graylisted side's plasmid inventory is not asked for
            listed_v, listed_a = np.where(gray_pull, 0, offer_v), np.where(gray_push, 0, offer_a)
            if live:
                revoked_pull = np.bitwise_count(listed_v & k_a)  # revoked plasmids the neighbour offered
                revoked_push = np.bitwise_count(listed_a & k_v)
        else:
            listed_v, listed_a = offer_v, offer_a
        del pos
        if limited:
            pull = _limit(pull, draws[1], inp.max_fetch, width, dtype)
            push = _limit(push, draws[2], inp.max_fetch, width, dtype)
        entries = _ones(listed_a) + _ones(listed_v) + (_ones(recall.rev) + _ones(theirs) if live else 0)
        if len(isolated):
            entries -= _ones(listed_a[isolated]) + _ones(listed_v[isolated])
            if live:
                entries -= 2 * _ones(recall.rev[isolated])
        inv = 2 * INVENTORY_HEADER_BYTES * contacts + INVENTORY_ENTRY_BYTES * entries
        del hv, offer_v, offer_a, listed_v, listed_a
        moved = np.zeros(width, dtype=np.int64)
        before = int(accepted.sum())
        # pull side: every agent is the receiver of its own pull, so plain element-wise updates suffice
        nz = np.flatnonzero(pull)
        got = pull[nz]
        _count(got, None if groups == 1 else inp.policy[nz], accept, accepted, refused, moved, width)
        ok = got & (acc if groups == 1 else acc[nz])
        held[nz] |= ok
        rejected[nz] |= got & ~ok
        if book is not None:
            rejected_pull = np.zeros(n, dtype=np.int64)
            rejected_pull[nz] = np.bitwise_count(got & ~ok)
        # push side: a neighbour contacted by several agents receives from each of them: scatter-OR
        nz = np.flatnonzero(push)
        got, who = push[nz], partner[nz]
        _count(got, None if groups == 1 else inp.policy[who], accept, accepted, refused, moved, width)
        ok = got & (acc if groups == 1 else acc[who])
        np.bitwise_or.at(held, who, ok)
        bad = got & ~ok
        if bad.any():
            np.bitwise_or.at(rejected, who, bad)
        if book is not None:
            rejected_push = np.zeros(n, dtype=np.int64)
            rejected_push[nz] = np.bitwise_count(bad)
            none = np.zeros(n, dtype=np.int64)
            book.penalise(rnd, (e_pull, rejected_pull, revoked_pull if live else none),
                          (e_push, rejected_push, revoked_push if live else none))
        del pull, push, nz, got, who, ok, bad
        rev_bytes, rev_moved = 0, False
        if live:
            rev_bytes, rev_moved = recall.exchange(partner, theirs)
            purged += recall.purge(held)
            del theirs, k_a, k_v
        del partner
        man_b, art_b = int(moved @ man), int(moved @ art)
        totals["inventory"] += inv
        totals["manifest"] += man_b
        totals["artifact"] += art_b
        totals["revocation"] += rev_bytes
        totals["purged"] += purged
        totals["graylisted"] += gray
        offers = int(moved.sum())
        n_acc = int(accepted.sum()) - before
        stats = {"contacts": contacts, "offers": offers, "accepted": n_acc, "rejected": offers - n_acc}
        stats["bytes"] = inv + man_b + art_b + rev_bytes
        extra = None
        if record_recall:
            extra = {"purged": purged, "graylisted": gray, "revocation_bytes": rev_bytes}
        observe(rnd, stats, extra)
        timings.append(time.perf_counter() - t0)
        pending = recall is not None and rnd < recall.last_issue
        if offers == 0 and not rev_moved and not pending:
            quiescent = not _can_change(g, held, wanted()) and not (recall is not None and recall.can_spread(g))
    return EngineResult(
        holdings=held,
        rejected=rejected,
        series=series,
        accepted=accepted,
        refused=refused,
        bytes_inventory=totals["inventory"],
        bytes_manifest=totals["manifest"],
        bytes_artifact=totals["artifact"],
        contacts=contacts * rnd,
        rounds_run=rnd,
        quiescent=quiescent,
        rounds_to_full=rounds_to_full,
        seconds_per_round=timings,
        revocations_held=None if recall is None else recall.rev,
        bytes_revocation=totals["revocation"],
        purged=totals["purged"],
        graylisted=totals["graylisted"],
        scores=None if book is None else book.score,
    )


def _ones(words: np.ndarray) -> int:
    """Set bits over all ``words``."""
    return int(np.bitwise_count(words).sum(dtype=np.int64))


def _count(
    got: np.ndarray,
    policy: np.ndarray | None,
    accept: np.ndarray,
    accepted: np.ndarray,
    refused: np.ndarray,
    moved: np.ndarray,
    width: int,
) -> None:
    """Add one side's transfers to the per-(policy, plasmid) gate counts: a transfer of plasmid p to an agent
    with policy g is accepted iff accept[g, p] (the verdict depends on nothing else)."""
    for gi in range(accept.shape[0]):
        per_bit = bit_counts(got if policy is None else got[policy == gi], width)
        accepted[gi] += np.where(accept[gi], per_bit, 0)
        refused[gi] += np.where(accept[gi], 0, per_bit)
        moved += per_bit
