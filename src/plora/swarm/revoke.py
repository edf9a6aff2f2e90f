"""A revocation event in a swarm run (``--revoke_at ROUND``): the signed records, where they enter, and the
report's ``final.recall`` block (shared by Swarm Sim v2 and the networked swarm).

    >>> import numpy as np
    >>> from plora.swarm.graphs import make_graph
    >>> from plora.swarm.revoke import reachable_from
    >>> g = make_graph("er", 50, p=0.1, seed=1)
    >>> passable = np.ones(50, dtype=bool)
    >>> int(reachable_from(g, 0, passable).sum()) == int((g.components()[1] == g.components()[1][0]).sum())
    True

What is revoked: every trojan plasmid in play (some agent starts with it) that the gate accepts under the run's
policy (the operator has learnt, out of band, that it is a trojan: the ground truth decides only which records are
issued, never how agents act). One record per
such plasmid, naming its artifact SHA-256, signed by the pool's swarm key (``PLORA_HOME/pool/<pool>/keys/swarm``; for
a pool without one, such as verdicts fixed by hand, an Ed25519 key made for the run) and verified for real against
the receivers' revocation keys (the policy's ``recall.revocation_keys``, else its ``trusted_keys``, else the swarm
key). A record that does not verify is refused by every receiver and never spreads (``final.recall.records[].
verified``). It enters at one honest agent, drawn by seed among those with a neighbour, at the start of round
``revoke_at``; trojan agents ignore revocations (they neither keep, forward nor apply them, and keep offering).

``final.recall`` (see :func:`recall_final`): per-round shares are in ``rounds[].recall``; here the totals:
``spread_rounds`` (first round at which every honest agent the trojan can reach held it), ``time_to_purge`` (rounds
from ``revoke_at``, that round included, until no honest agent the revocation can reach holds it), ``peak_prevalence``
and ``peak_injecting`` (largest share of honest agents holding / injecting it, i.e. holding one of their own domain),
``exposure`` and ``injecting_exposure`` (agent-rounds), ``within_target`` (time_to_purge <= spread_rounds + 2), the
records, the mean-field prediction (:func:`plora.swarm.theory.recall_prediction`), and peer scoring's counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.swarm.graphs import Graph
from plora.swarm.theory import recall_prediction

SIM_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # simulated issue time: reports stay a pure function of the flags
REASON = "trojan accepted by the gate; recalled by the swarm operator"


def revocation_seed(seed: int) -> int:
    """A fourth stream of the run seed (graph, roles and rounds take the first three): the revocation's origin."""
    child = np.random.SeedSequence(seed).spawn(4)[3]
    return int(child.generate_state(1, np.uint64)[0] >> 1)


def reachable_from(graph: Graph, origin: int, passable: np.ndarray) -> np.ndarray:
    """Agents reachable from ``origin`` through agents that are ``passable`` (``origin`` included if passable): one
    breadth-first search in C (scipy.sparse.csgraph) over the edges whose ends are both passable; O(N + E)."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order

    seen = np.zeros(graph.n, dtype=bool)
    if not passable[origin]:
        return seen
    rows = np.repeat(np.arange(graph.n, dtype=np.int32), np.diff(graph.indptr))
    keep = passable[graph.indices] & passable[rows]
    indptr = np.zeros(graph.n + 1, dtype=np.int64)  # new arrays: the graph's own are never touched
    np.cumsum(np.bincount(rows[keep], minlength=graph.n), out=indptr[1:])
    indices = graph.indices[keep]
    adj = csr_array((np.ones(len(indices), dtype=np.int8), indices, indptr), shape=(graph.n, graph.n))
    seen[breadth_first_order(adj, origin, directed=True, return_predecessors=False)] = True
    return seen


def revocation_keys(provider: Any, policy: Any) -> tuple[Any, Any, int, str]:
    """(signing key, receivers' revocation keyring, quorum, where the signing key came from)."""
    from plora.signer import Keyring, generate_keypair, load_private_key

    root = getattr(provider, "root", None)
    if root is not None:
        keys = root / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        if not (keys / "swarm").exists():
            generate_keypair("rsa", keys / "swarm")
        private, source = load_private_key(keys / "swarm"), str(keys / "swarm")
    else:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        private, source = ed25519.Ed25519PrivateKey.generate(), "an Ed25519 key made for this run"
    recall = getattr(policy, "recall", None)
    quorum = recall.revocation_quorum if recall is not None else 1
    if recall is not None and recall.revocation_keys:
        ring = Keyring.load(recall.revocation_keys)
    elif policy is not None and policy.trusted_keys:
        ring = Keyring.load(policy.trusted_keys)
    else:
        ring = Keyring.from_keys([private.public_key()])
    return private, ring, quorum, source


def issue_records(entries: list[Any], targets: list[int], private: Any, keyring: Any,
                  quorum: int) -> list[dict[str, Any]]:
    """One signed record per target entry, each verified as a receiver would; returns their descriptions."""
    from plora.recall.record import ArtifactTarget, issue_revocation, verify_revocation

    out = []
    for i in targets:
        e = entries[i]
        env = issue_revocation(ArtifactTarget(kind="artifact", sha256=e.sha256, plasmid_id=e.plasmid_id), REASON,
                               private, issuer="swarm operator", issued_at=SIM_EPOCH)
        check = verify_revocation(env, keyring, quorum)
        out.append({"id": check.id, "plasmid": e.plasmid_id, "sha256": e.sha256, "index": i,
                    "bytes": len(env.to_json()), "verified": check.ok,
                    "reasons": [f"{c}: {m}" for c, m in check.reasons], "envelope": env})
    return out


def accepted_trojans(entries: list[Any], verdicts: list[Any], in_play: set[int]) -> list[int]:
    """The trojans to revoke: accepted by the gate and held by some agent at the start (in play)."""
    targets = [i for i, (e, v) in enumerate(zip(entries, verdicts, strict=True))
               if e.trojan and v.accepted and i in in_play]
    if not targets:
        raise PloraError("--revoke_at: no trojan in play is accepted by the gate under this policy, so there is "
                         "nothing to recall; give trojan agents (--trojan_rate) and a policy or pool that lets one "
                         "through (e.g. --tau_trigger 1000, or --security off)")
    return targets


def pick_origin(graph: Graph, honest: np.ndarray, seed: int) -> int:
    candidates = np.flatnonzero(honest & (graph.degrees > 0))
    if len(candidates) == 0:
        raise PloraError("--revoke_at: no honest agent has a neighbour to pass a revocation to")
    return int(np.random.default_rng(revocation_seed(seed)).choice(candidates))


def recall_final(rounds: list[dict[str, Any]], revoke_at: int, records: list[dict[str, Any]], origin: int | str,
                 spread_reach: int, purge_reach: int, honest: int, theory: dict[str, Any] | None,
                 scoring: dict[str, Any] | None) -> dict[str, Any]:
    """The report's ``final.recall`` from the per-round ``recall`` rows (see the module docstring)."""
    rows = [r for r in rounds if r.get("recall")]
    holders = [r["recall"]["holders"] for r in rows]
    spread = next((r["round"] for r in rows if r["round"] < revoke_at and spread_reach
                   and r["recall"]["holders"] >= spread_reach), None)
    purge_round = next((r["round"] for r in rows if r["round"] >= revoke_at
                        and r["recall"]["holders_reachable"] == 0), None)
    time_to_purge = None if purge_round is None else purge_round - revoke_at + 1
    peak = max(rows, key=lambda r: r["recall"]["holding"]) if rows else None
    peak_inj = max(rows, key=lambda r: r["recall"]["injecting"]) if rows else None
    last = rows[-1]["recall"] if rows else {}
    return {
        "revoke_at": revoke_at,
        "origin": origin,
        "records": [{k: v for k, v in r.items() if k not in ("envelope", "index")} for r in records],
        "honest_agents": honest,
        "spread_reachable": spread_reach,
        "revocation_reachable": purge_reach,
        "spread_rounds": spread,
        "purge_round": purge_round,
        "time_to_purge": time_to_purge,
        "within_target": None if spread is None or time_to_purge is None else time_to_purge <= spread + 2,
        "peak_prevalence": 0.0 if peak is None else peak["recall"]["holding"],
        "peak_round": None if peak is None else peak["round"],
        "peak_injecting": 0.0 if peak_inj is None else peak_inj["recall"]["injecting"],
        "exposure": int(sum(holders)),
        "injecting_exposure": int(sum(r["recall"]["injectors"] for r in rows)),
        "holding_at_end": last.get("holders", 0),
        "purged": int(sum(r["recall"].get("purged", 0) for r in rows)),
        "revocation_bytes": int(sum(r["recall"].get("revocation_bytes", 0) for r in rows)),
        "peer_scoring": scoring,
        "theory": theory,
    }


def recall_policy(cfg: Any, policy: Any) -> Any:
    """The policy's ``recall`` section (defaults with security off), with ``--peer_scoring`` applied."""
    from plora.recall.policy import RecallPolicy

    recall = policy.recall if policy is not None else RecallPolicy()
    if cfg.peer_scoring is not None:
        recall = recall.model_copy(update={"peer_scoring": cfg.peer_scoring})
    return recall


@dataclass
class RecallSetup:
    """What a run needs for recall: the engine's plan and scoring, and how to report them."""

    recall: Any  # RecallPolicy in force
    plan: Any = None  # RevocationPlan, or None without --revoke_at
    records: list[dict[str, Any]] = field(default_factory=list)
    origin: int | None = None
    spread_reach: int = 0
    attackers: float = 0.0
    degrees: Any = None

    @property
    def scoring(self) -> Any:
        return self.recall.scoring()

    @property
    def flipped(self) -> Any:
        """The scoring of the other arm of ``--compare_peer_scoring``."""
        return None if self.recall.peer_scoring else self.recall.model_copy(update={"peer_scoring": True}).scoring()

    def final(self, result: Any, other: Any, graph: Graph, cfg: Any) -> dict[str, Any] | None:
        """``final.recall`` for the run (None when neither a revocation nor peer scoring is in play)."""
        if self.plan is None and self.scoring is None and other is None:
            return None
        scoring = _scoring_summary(self.recall, result)
        if self.plan is None:
            out: dict[str, Any] = {"revoke_at": None, "peer_scoring": scoring}
        else:
            honest = int(np.count_nonzero(self.plan.obey))
            theory = recall_prediction(self.degrees, self.attackers, cfg.revoke_at, honest,
                                       max(result.rounds_run, cfg.revoke_at) + 5)
            out = recall_final(result.series, cfg.revoke_at, self.records, self.origin, self.spread_reach,
                               int(np.count_nonzero(self.plan.reach)), honest, theory, scoring)
        if other is not None:
            out["arms"] = {
                ("peer_scoring_on" if self.scoring is not None else "peer_scoring_off"): self._arm(result, cfg),
                ("peer_scoring_off" if self.scoring is not None else "peer_scoring_on"): self._arm(other, cfg),
            }
        return out

    def _arm(self, result: Any, cfg: Any) -> dict[str, Any]:
        rows = [r for r in result.series if r.get("recall")]
        acc, ref = result.accepted.sum(axis=0), result.refused.sum(axis=0)
        trojan = self.plan is not None  # (pool ground truth is not at hand here; the series carries the counts)
        arm = {
            "bytes_on_wire": int(result.bytes_inventory + result.bytes_manifest + result.bytes_artifact
                                 + result.bytes_revocation),
            "offers": int(acc.sum() + ref.sum()),
            "rejected_transfers": int(ref.sum()),
            "graylisted": int(result.graylisted),
            "rounds_run": int(result.rounds_run),
            "trojan_exposure": int(sum(r["recall"]["trojan_holders"] for r in rows)),
            "trojan_holding": [r["recall"]["trojan_holders"] for r in rows],
        }
        if trojan:
            purge = recall_final(result.series, cfg.revoke_at, [], self.origin, self.spread_reach,
                                 int(np.count_nonzero(self.plan.reach)), int(np.count_nonzero(self.plan.obey)),
                                 None, None)
            arm.update({k: purge[k] for k in ("exposure", "injecting_exposure", "peak_prevalence", "time_to_purge")})
            arm["holding"] = [r["recall"]["holding"] for r in rows]
        return arm


def _scoring_summary(recall: Any, result: Any) -> dict[str, Any]:
    return {
        "enabled": bool(recall.peer_scoring),
        "penalty_rejected": recall.penalty_rejected,
        "penalty_revoked": recall.penalty_revoked,
        "score_decay": recall.score_decay,
        "graylist_threshold": recall.graylist_threshold,
        "graylisted": int(result.graylisted),
    }


def plan_recall(cfg: Any, provider: Any, view: Any, verdicts: list[Any], policy: Any, graph: Graph,
                held: np.ndarray, honest: np.ndarray, labels: np.ndarray) -> RecallSetup:
    """The run's recall setup from its flags: peer scoring from the policy (or ``--peer_scoring``), and with
    ``--revoke_at`` the signed, verified records and the engine's :class:`plora.swarm.recall.RevocationPlan`."""
    from plora.swarm.recall import RevocationPlan

    setup = RecallSetup(recall_policy(cfg, policy))
    if cfg.revoke_at is None:
        return setup
    in_play = {p for p in range(len(provider.entries)) if np.any((held >> held.dtype.type(p)) & held.dtype.type(1))}
    targets = accepted_trojans(provider.entries, verdicts, in_play)
    private, keyring, quorum, _ = revocation_keys(provider, policy)
    records = issue_records(provider.entries, targets, private, keyring, quorum)
    valid = [r for r in records if r["verified"]]
    origin = pick_origin(graph, honest, cfg.seed)
    target_bits = 0
    for r in records:
        target_bits |= 1 << r["index"]
    dtype = held.dtype.type
    sources = (held & dtype(target_bits)) != 0
    comp_has = np.zeros(int(labels.max()) + 1 if len(labels) else 0, dtype=bool)
    comp_has[labels[sources]] = True
    setup.plan = RevocationPlan(
        masks=[1 << r["index"] for r in valid],
        issue_round=[cfg.revoke_at] * len(valid),
        origin=[origin] * len(valid),
        record_bytes=[r["bytes"] for r in valid],
        obey=honest,
        reach=reachable_from(graph, origin, honest) if valid else np.zeros(graph.n, dtype=bool),
    )
    setup.records, setup.origin = records, origin
    setup.spread_reach = int(np.count_nonzero(comp_has[labels] & honest)) if len(labels) else 0
    setup.attackers = float(np.count_nonzero(sources)) / max(graph.n, 1)
    setup.degrees = graph.degrees[comp_has[labels]] if len(labels) else graph.degrees
    return setup
