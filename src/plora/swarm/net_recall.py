"""Recall in the networked swarm: what the coordinator adds to ``plora swarm net`` for ``--revoke_at``,
``--peer_scoring`` and ``--live_model``.

    >>> from plora.swarm.net_recall import agent_flags
    >>> agent_flags(obey=False, live_model=False, domain="legal", peer_scoring=None, revocation_keys=["k.pub"])
    ['--revocation-keys', 'k.pub', '--obey-revocations', 'off']

* Every agent trusts the same revocation keys: the policy's ``recall.revocation_keys``, else its ``trusted_keys``,
  else the pool's swarm key (which signs the records, as in Swarm Sim v2). Trojan agents run with
  ``--obey-revocations off``; with ``--live_model`` every agent loads the base and hot-loads (merged) the plasmids of
  its domain that it accepts.
* At the start of round ``revoke_at`` the coordinator signs one record per trojan plasmid that some honest agent has
  accepted so far (the operator's view: what got through) and hands them to one honest agent, drawn by the sim's
  revocation seed, in that round's Step. From there the agents gossip them; the coordinator only watches.
* The report's rows get the same ``recall`` block as the sim's, from the agents' own records (holdings, revocations
  held, plasmids injected), and ``final.recall`` adds ``live_weights``: for every plasmid an agent unloaded because
  of a revocation, the weights digest before its injection, after its removal and the one expected, and whether
  they are equal bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def agent_flags(obey: bool, live_model: bool, domain: str, peer_scoring: bool | None,
                revocation_keys: list[str]) -> list[str]:
    """The ``plora agent`` flags one agent gets for recall."""
    out = ["--revocation-keys", ",".join(revocation_keys)] if revocation_keys else []
    if not obey:
        out += ["--obey-revocations", "off"]
    if live_model:
        out += ["--live-model", "--domain", domain]
    if peer_scoring is not None:
        out += ["--peer-scoring", "on" if peer_scoring else "off"]
    return out


class NetRecall:
    """The coordinator's side of recall for one networked run."""

    def __init__(self, cfg: Any, root: Path | None, entries: list[Any], policy: Any, graph: Any,
                 trojan_agents: set[int]) -> None:
        from plora.swarm.revoke import pick_origin, recall_policy

        self.cfg = cfg
        self.entries = entries
        self.policy = policy
        self.recall = recall_policy(cfg, policy)
        self.honest = np.array([i not in trojan_agents for i in range(cfg.agents)], dtype=bool)
        self.trojan_agents = trojan_agents
        self.root = root
        self.keys: list[str] = []
        if self.recall.revocation_keys:
            self.keys = [str(Path(k).resolve()) for k in self.recall.revocation_keys]
        elif policy is not None and policy.trusted_keys:
            self.keys = [str(Path(k).resolve()) for k in policy.trusted_keys]
        elif root is not None and cfg.revoke_at is not None:  # the key that will sign (made by prepare())
            self.keys = [str((root / "keys" / "swarm.pub").resolve())]
        self.origin = pick_origin(graph, self.honest, cfg.seed) if cfg.revoke_at is not None else None
        self.graph = graph
        self.records: list[dict[str, Any]] = []
        self.issued = False
        self.note = ""
        self.per_round: list[dict[int, dict[str, Any]]] = []  # per round: agent -> its recall record

    def prepare(self) -> None:
        """Make sure the swarm key exists before agents start (they load the revocation keys once)."""
        if self.cfg.revoke_at is not None and self.root is not None:
            from plora.swarm.revoke import revocation_keys

            revocation_keys(_Rooted(self.root), self.policy)

    def flags(self, i: int, domain: str) -> list[str]:
        return agent_flags(i not in self.trojan_agents, self.cfg.live_model, domain, self.cfg.peer_scoring, self.keys)

    def issue(self, r: int, state: Any) -> dict[int, list[bytes]]:
        """At round ``revoke_at``: the signed records for the origin's Step (empty otherwise)."""
        if self.cfg.revoke_at is None or r != self.cfg.revoke_at or self.origin is None:
            return {}
        from plora.signer import Keyring
        from plora.swarm.revoke import issue_records, revocation_keys

        by_sha = {e.sha256: k for k, e in enumerate(self.entries)}
        got = sorted({by_sha[e["sha256"]] for row in state.rows for e in row["events"]
                      if e.get("accepted") and e["sha256"] in by_sha and self.entries[by_sha[e["sha256"]]].trojan
                      and e["agent"] not in self.trojan_agents})
        self.issued = True
        if not got:
            self.note = f"no honest agent had accepted a trojan before round {r}: nothing to revoke"
            return {}
        private, _, quorum, _ = revocation_keys(_Rooted(self.root), self.policy)
        self.records = issue_records(self.entries, got, private, Keyring.load(self.keys), quorum)
        return {self.origin: [rec["envelope"].to_json() for rec in self.records]}

    def absorb(self, recs: dict[int, dict[str, Any]], late: dict[int, dict[str, Any]]) -> None:
        row: dict[int, dict[str, Any]] = {}
        for i in set(recs) | set(late):
            parts = [x.get("recall") or {} for x in (recs.get(i), late.get(i)) if x]
            if parts:
                last = parts[-1]
                row[i] = {"revocations": last.get("revocations", []), "injected": last.get("injected"),
                          "events": [e for p in parts for e in p.get("events", [])]}
        self.per_round.append(row)

    def blocked(self, i: int) -> set[str]:
        """Artifact SHA-256s agent ``i`` knows revoked (never fetched again: for the quiescence check)."""
        if not self.per_round or i in self.trojan_agents:
            return set()
        known = set((self.per_round[-1].get(i) or {}).get("revocations", []))
        return {r["sha256"] for r in self.records if r["id"] in known}

    def can_spread(self, neighbours: dict[int, list[int]], alive: dict[int, bool]) -> bool:
        if self.cfg.revoke_at is not None and not self.issued:
            return True  # the revocation is still to come
        if not self.per_round:
            return False
        last = self.per_round[-1]

        def held(i: int) -> set[str]:
            return set((last.get(i) or {}).get("revocations", []))

        return any(alive[i] and alive[j] and self.honest[i] and held(j) - held(i)
                   for i, nbrs in neighbours.items() for j in nbrs)

    # ---------------------------------------------------------------------------------------------- report
    def report(self, rounds: list[dict[str, Any]], held_rows: list[dict[int, dict[str, str]]],
               final: dict[str, Any]) -> None:
        """Add the ``recall`` block to each round row and ``final.recall`` (see the module docstring)."""
        if self.cfg.revoke_at is None and self.recall.scoring() is None:
            return
        from plora.swarm.revoke import recall_final
        from plora.swarm.theory import recall_prediction

        trojan_shas = {e.sha256 for e in self.entries if e.trojan}
        target = {r["sha256"] for r in self.records}
        domain_of = {e.sha256: e.domain for e in self.entries}
        domains = list(self.cfg.domains)
        n_honest = max(int(self.honest.sum()), 1)
        reach = None
        if self.origin is not None:
            from plora.swarm.revoke import reachable_from

            reach = reachable_from(self.graph, self.origin, self.honest)
        rev_bytes_total = 0
        for k, (row, held) in enumerate(zip(rounds, held_rows, strict=True)):
            agents = self.per_round[k - 1] if k else {}
            events = [e for a in agents.values() for e in a["events"]]
            rev_bytes = sum(int(e.get("bytes", 0)) for e in events if e["kind"] == "revocation" and
                            e.get("peer") != "operator")
            rev_bytes_total += rev_bytes
            honest = [i for i in held if self.honest[i]]
            holders = [i for i in honest if target & set(held[i].values())]
            if self.cfg.live_model:
                ids = {e.plasmid_id for e in self.entries if e.sha256 in target}
                injectors = [i for i in honest if ids & set((agents.get(i) or {}).get("injected") or [])]
            else:
                injectors = [i for i in holders if any(domain_of.get(s) == domains[i % len(domains)]
                                                       for s in set(held[i].values()) & target)]
            ids_all = {r["id"] for r in self.records if r["verified"]}
            informed = [i for i in honest if ids_all and ids_all <= set((agents.get(i) or {}).get("revocations", []))]
            row["recall"] = {
                "trojan_holders": sum(1 for i in honest if trojan_shas & set(held[i].values())),
                "holding": round(len(holders) / n_honest, 6),
                "injecting": round(len(injectors) / n_honest, 6),
                "revocation": round(len(informed) / n_honest, 6),
                "holders": len(holders), "injectors": len(injectors), "informed": len(informed),
                "holders_reachable": len(holders) if reach is None else sum(1 for i in holders if reach[i]),
                "purged": sum(1 for e in events if e["kind"] == "purge"),
                "graylisted": sum(1 for e in events if e["kind"] == "graylisted"),
                "revocation_bytes": rev_bytes,
            }
            row["bytes"] += rev_bytes
        if rev_bytes_total:
            final["bytes_breakdown"]["revocation"] = rev_bytes_total
            final["bytes_on_wire"] += rev_bytes_total
        graylisted = sum(r["recall"]["graylisted"] for r in rounds)
        scoring = {"enabled": bool(self.recall.peer_scoring), "graylisted": graylisted}
        if self.cfg.revoke_at is None:
            final["recall"] = {"revoke_at": None, "peer_scoring": scoring}
            return
        _, labels = self.graph.components()
        sources = [i for i in self.trojan_agents]
        comps = {int(labels[i]) for i in sources}
        spread_reach = sum(1 for i in range(self.cfg.agents) if self.honest[i] and int(labels[i]) in comps)
        theory = recall_prediction(self.graph.degrees, len(sources) / max(self.cfg.agents, 1), self.cfg.revoke_at,
                                   int(self.honest.sum()), max(rounds[-1]["round"], self.cfg.revoke_at) + 5)
        out = recall_final(rounds, self.cfg.revoke_at, self.records, f"a{self.origin}", spread_reach,
                           int(reach.sum()) if reach is not None else 0, int(self.honest.sum()), theory, scoring)
        checks = [dict(e["live"], agent=f"a{i}", round=e["round"]) for k, agents in enumerate(self.per_round)
                  for i, a in agents.items() for e in a["events"] if e["kind"] == "purge" and e.get("live")]
        out["live_weights"] = {"unloaded": len(checks), "all_equal": all(c["equal"] for c in checks),
                               "checks": checks}
        if self.note:
            out["note"] = self.note
        final["recall"] = out


class _Rooted:
    """A stand-in provider with only the pool's root (where the swarm key lives)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
