"""The networked swarm: N real agent processes on loopback gossiping plasmids push-pull over gRPC.

    >>> from plora.swarm.net import NetConfig, run_swarm_net
    >>> cfg = NetConfig(agents=3, rounds=4, graph_p=1.0, trojan_rate=0.0, seed=42, domains=("legal", "medical"),
    ...                 pool_dir="mypool", security=False, progress=False)
    >>> report = run_swarm_net(cfg)          # 3 agent processes on 127.0.0.1
    >>> report["meta"]["engine"], report["final"]["coverage"]
    ('net', {'legal': 1.0, 'medical': 1.0})

What the coordinator does (``plora swarm net``), with the same flags and seed as Swarm Sim v2 (``plora swarm sim``):

1. plasmids: the sim's pool (:class:`plora.swarm.pool.PlasmidPool`: real clean and trojan plasmids trained on the
   base once and cached by content, or ``--pool_dir`` with a ``labels.json``); with ``--signatures on`` the pool's
   signed copy (clean plasmids signed by the swarm key, trojans by an intruder key; ``--trusted_pubkeys`` replaces
   the trust set). Labels serve the FN/FP accounting only; no agent ever sees them.
2. roles, holdings and overlay are drawn exactly as the sim draws them from the same seed (graph, roles and rounds
   seeds from :func:`plora.swarm.sim.stream_seeds`; roles by :func:`plora.swarm.roles.assign_roles`, as in the sim):
   Erdős–Rényi G(N, graph_p); ``round(trojan_rate * N)`` trojan agents starting with the trojan plasmid of their
   domain ``i mod D``; honest agent i starting with the clean one.
3. agents: each is a separate ``plora agent --coordinated`` process on 127.0.0.1 (port picked by the OS) with its
   own store and its own gate under the sim's policy (the same policy key, so gate verdicts cached on disk by the sim
   or by other agents are reused: see plora.swarm.agent); each learns its neighbours' addresses once all listen.
   Each takes Step calls only with this run's random token (handed over in a mode 0600 file) and stops by itself
   once the coordinator is gone, even killed with SIGKILL.
4. rounds: the coordinator calls Step(r) on every agent at once and waits for all (a barrier); each agent contacts
   one random neighbour, pulls, then pushes, serving only what it held when round r began (plora.swarm.agent_round:
   what arrives in round r is passed on from r+1, as in the sim), so the contacts' order changes nothing and a seed
   gives the same rounds on both drivers. A second Step(collect) gathers what arrived late in the round. An agent
   that dies is reported and the others carry on. The run stops early once no live edge can carry anything (every
   agent holds or has refused what its neighbours hold). Then it writes the report with the Swarm Sim v2 schema.

Bytes on the wire: inventories pulled, Offer messages pushed, and every fetch's manifest + adapter_config + artifact
bytes, as the receiving agents counted them (control traffic between coordinator and agents is not counted).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.fsio import atomic_write_json, atomic_write_text, process_temp_dir
from plora.swarm.config import NetConfig
from plora.swarm.net_agents import check_memory, interrupts_deferred, spawn_agent, step_all, wait_ready
from plora.swarm.net_recall import NetRecall


def _pool_and_policy(cfg: NetConfig) -> tuple[list[Any], list[str], Any, Path | None]:
    """(pool entries, domains in play, policy or None, the pool's root folder): what Swarm Sim v2 uses for the same
    flags."""
    from plora.swarm.pool import PlasmidPool, PoolSpec
    from plora.swarm.sim import gate_setup

    pool = PlasmidPool.from_dir(cfg.pool_dir) if cfg.pool_dir else PlasmidPool.build(PoolSpec(domains=cfg.domains))
    provider, policy = gate_setup(cfg.sim_config(), pool)
    held = {e.domain for e in provider.entries}
    domains = [d for d in cfg.domains if d in held] or sorted(held)
    return provider.entries, domains, policy, getattr(provider, "root", None)  # a signed pool: its copy's root


@dataclass
class _Setup:
    """What both drivers (processes here, Ray actors in plora.swarm.net_ray) start from: the sim's draws."""

    pool: list[Any]
    domains: list[str]
    policy_json: dict[str, Any] | None
    graph: Any
    trojan_agents: set[int]
    seeded: dict[int, Any]
    recall: NetRecall
    t_start: float
    t_pool: float
    started: time.struct_time

    @property
    def neighbours(self) -> dict[int, list[int]]:
        return {i: [int(j) for j in self.graph.neighbours(i)] for i in range(self.graph.n)}

    def agent_flags(self, i: int) -> list[str]:
        return self.recall.flags(i, self.domains[i % len(self.domains)])


def _setup(cfg: NetConfig) -> _Setup:
    from plora.swarm.graphs import make_graph
    from plora.swarm.sim import check_inputs, stream_seeds

    if cfg.agents < 2 or cfg.rounds < 1 or not 0 <= cfg.trojan_rate <= 1 or not 0 <= cfg.graph_p <= 1:
        raise PloraError("need --agents >= 2, --rounds >= 1, --trojan_rate and --graph_p in [0, 1]")
    if cfg.work_dir:
        work = Path(cfg.work_dir).expanduser()
        nearest = next(p for p in (work, *work.parents) if p.exists())
        if not nearest.is_dir():
            where = "" if nearest == work else f": {nearest}"
            raise PloraError(f"--work_dir {cfg.work_dir}{where} exists and is not a folder")
    check_inputs(cfg.policy_file, () if cfg.pool_dir else cfg.domains, cfg.sim_config())
    t_start, started = time.perf_counter(), time.gmtime()
    pool, domains, policy, pool_root = _pool_and_policy(cfg)
    t_pool = time.perf_counter() - t_start
    graph_seed, role_seed, _ = stream_seeds(cfg.seed)
    graph = make_graph("er", cfg.agents, p=cfg.graph_p, seed=graph_seed)
    trojan_agents, first = initial_plasmids(cfg.agents, pool, domains, cfg.trojan_rate, role_seed)
    recall = NetRecall(cfg, pool_root, pool, policy, graph, trojan_agents)
    recall.prepare()
    policy_json = policy.model_dump(mode="json") if policy else None  # the report's copy: the work folder may go
    return _Setup(pool, domains, policy_json, graph, trojan_agents, first, recall, t_start, t_pool, started)


def _run_rounds(cfg: NetConfig, setup: _Setup, state: _State, step_all: Any, on_round: Any = None) -> bool:
    """The barrier rounds (both drivers): ``step_all(alive, round, collect, revocations)`` returns the live agents'
    records and marks the dead ones; returns whether the run stopped because nothing could change any more."""
    neighbours, recall = setup.neighbours, setup.recall
    alive = {i: True for i in range(cfg.agents)}
    quiescent = False
    progress = _progress(cfg)
    try:
        for r in range(1, cfg.rounds + 1):
            recs = step_all(alive, r, False, recall.issue(r, state))
            late = step_all(alive, r, True, {})
            state.absorb(r, recs, late, alive)
            recall.absorb(recs, late)
            if progress:
                progress.advance(progress.task_ids[0])
            if on_round is not None:
                on_round(r - 1)
            quiescent = not state.can_change(neighbours, alive, recall.blocked) and not recall.can_spread(
                neighbours, alive)
            if quiescent:
                break
    finally:
        if progress:
            progress.stop()
    return quiescent


def _finish(cfg: NetConfig, setup: _Setup, state: _State, quiescent: bool, t_rounds: float,
            addresses: dict[int, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build and write the report (Swarm Sim v2 schema) from the agents' records; both drivers end here."""
    from plora.swarm.graphs import graph_stats
    from plora.swarm.report import build_report, write_report

    meta, rounds, final = _report_parts(cfg, setup.graph, graph_stats(setup.graph), setup.pool, setup.domains,
                                        setup.trojan_agents, setup.seeded, state, quiescent, setup.policy_json)
    initial = {i: {p.plasmid_id: p.sha256} for i, p in setup.seeded.items()}
    setup.recall.report(rounds, [initial] + [row["held"] for row in state.rows], final)
    meta["extra"].update(extra or {"driver": "processes"})
    meta["timings"] = {"wall_s": round(time.perf_counter() - setup.t_start, 3), "pool_s": round(setup.t_pool, 3),
                       "rounds_s": round(t_rounds, 3),
                       "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", setup.started),
                       "addresses": {f"a{i}": a for i, a in sorted(addresses.items())}}
    report = build_report(meta, rounds, final)
    path = write_report(report, cfg.report_dir, stem=_run_stem(report, cfg.report_dir, setup.started))
    report["meta"]["timings"]["report_path"] = str(path)
    return report


def run_swarm_net(cfg: NetConfig, on_round: Any = None) -> dict[str, Any]:
    """Run the networked swarm and write its report; ``on_round(round, agents)`` is called after each barrier
    (``agents``: the agent processes, or with ``cfg.ray`` the Ray actors hosting them)."""
    if cfg.ray or cfg.ray_address:
        from plora.swarm.net_ray import run_swarm_net_ray

        return run_swarm_net_ray(cfg, on_round)
    from plora.grpc.client import clean_stale_stages

    check_memory(cfg)
    setup = _setup(cfg)
    token = secrets.token_urlsafe(32)  # this run's: only this coordinator can drive its agents' rounds
    work = Path(cfg.work_dir) if cfg.work_dir else process_temp_dir("plora-swarm-net-")
    work.mkdir(parents=True, exist_ok=True)
    policy_path = atomic_write_json(work / "policy.json", setup.policy_json) if setup.policy_json else None
    _seed_stores(work, setup.seeded)
    procs: dict[int, subprocess.Popen] = {}
    addresses: dict[int, str] = {}
    state = _State(cfg.agents, {i: {p.plasmid_id: p.sha256} for i, p in setup.seeded.items()})
    quiescent = False
    t_rounds = 0.0
    try:
        for i in range(cfg.agents):
            with interrupts_deferred():  # Ctrl-C never falls between starting an agent and registering it
                procs[i] = spawn_agent(cfg, work, i, policy_path, setup.agent_flags(i), token=token)
        addresses = wait_ready(work, procs, timeout=120.0)
        t_ready = time.perf_counter()
        for i, nbrs in setup.neighbours.items():
            atomic_write_text(work / f"a{i}" / "peers.txt", "".join(addresses[j] + "\n" for j in nbrs))

        def step_round(alive: dict[int, bool], r: int, collect: bool, revocations: dict) -> dict[int, dict]:
            return step_all(addresses, alive, r, collect, cfg.step_timeout_s, revocations, token)

        quiescent = _run_rounds(cfg, setup, state, step_round,
                                None if on_round is None else (lambda r: on_round(r, procs)))
        t_rounds = time.perf_counter() - t_ready
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if cfg.work_dir:
            for i in procs:  # every agent has exited: a staging folder left now is a dead agent's partial fetch
                clean_stale_stages(work / f"a{i}" / "store")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return _finish(cfg, setup, state, quiescent, t_rounds, addresses)


def _run_stem(report: dict[str, Any], report_dir: str, started: time.struct_time) -> str:
    """The report's stem plus the run's start time: a networked run is not reproducible, so none overwrites another."""
    from plora.swarm.report import report_stem

    stem = f"{report_stem(report)}-{time.strftime('%Y%m%dT%H%M%SZ', started)}"
    n, unique = 1, stem
    while (Path(report_dir) / f"{unique}.json").exists():
        n += 1
        unique = f"{stem}-{n}"
    return unique


def initial_plasmids(agents: int, pool: list[Any], domains: list[str], trojan_rate: float,
                     role_seed: int) -> tuple[set[int], dict[int, Any]]:
    """(trojan agents, agent -> the pool entry it starts with): :func:`plora.swarm.roles.assign_roles`, the sim's
    draw, so the same seed makes the same agents trojans and seeds the same plasmids."""
    from plora.swarm.roles import assign_roles

    index = {d: i for i, d in enumerate(domains)}
    roles = assign_roles(agents, np.array([index.get(p.domain, -1) for p in pool], dtype=np.int64),
                         np.array([p.trojan for p in pool], dtype=bool), trojan_rate, role_seed, None, domains)
    trojan_agents = {int(i) for i in np.flatnonzero(roles.trojan_agents)}
    return trojan_agents, {i: pool[int(j)] for i, j in enumerate(roles.initial) if j >= 0}


def _seed_stores(work: Path, first: dict[int, Any]) -> dict[int, Any]:
    """Each agent's store, holding the plasmid it starts with."""
    for i, entry in first.items():
        store = work / f"a{i}" / "store"
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        _copy_plasmid(Path(entry.folder), store / entry.plasmid_id)
    return first


def _copy_plasmid(src: Path, dest: Path) -> None:
    """The plasmid's files only (a pool folder may hold a ground-truth file beside them: never hand it out)."""
    from plora.manifest import ADAPTER_CONFIG_NAME, MANIFEST_NAME, read_manifest

    dest.mkdir()
    for name in (MANIFEST_NAME, ADAPTER_CONFIG_NAME, read_manifest(src).artifact.filename):
        shutil.copy2(src / name, dest / name)


class _State:
    """What the coordinator learnt from the agents' round records: holdings, refusals, per-round counts."""

    def __init__(self, n: int, initial: dict[int, dict[str, str]]) -> None:
        self.held: dict[int, dict[str, str]] = {i: dict(h) for i, h in initial.items()}
        self.refused: dict[int, set[tuple[str, str]]] = {i: set() for i in range(n)}
        self.rows: list[dict[str, Any]] = []  # per round: contacts, transfer events, inventory bytes, holdings
        self.died: dict[int, int] = {}
        self.errors: list[str] = []

    def absorb(self, r: int, recs: dict[int, dict], late: dict[int, dict], alive: dict[int, bool]) -> None:
        events: list[dict[str, Any]] = []
        inventory = contacts = 0
        for i in sorted(self.held):
            if not alive[i]:
                self.died.setdefault(i, r)
                continue
            for rec in (recs.get(i), late.get(i)):
                if rec:
                    events += [dict(e, agent=i) for e in rec["events"]]
                    inventory += int(rec.get("inventory_bytes", 0))
                    self.errors += [f"round {r} a{i}: {e}" for e in rec.get("errors", [])]
            contacts += int(bool((recs.get(i) or {}).get("peer")))
            last = late.get(i) or recs.get(i)
            if last:
                self.held[i] = dict(last["holdings"])
        for e in events:
            if not e["accepted"] and "error" not in e:
                self.refused[e["agent"]].add((e["id"], e["sha256"]))
        self.rows.append({"round": r, "contacts": contacts, "events": events, "inventory": inventory,
                          "held": {i: dict(h) for i, h in self.held.items()}})

    def can_change(self, neighbours: dict[int, list[int]], alive: dict[int, bool],
                   blocked: Any = None) -> bool:
        """True while a live edge can still carry a plasmid one end holds and the other neither holds nor refused
        (nor knows revoked: ``blocked(i)`` gives the artifact SHA-256s agent i will never fetch)."""
        for i, nbrs in neighbours.items():
            never = blocked(i) if blocked is not None else set()
            for j in nbrs:
                if alive[i] and alive[j]:
                    for pid, sha in self.held[j].items():
                        if pid not in self.held[i] and (pid, sha) not in self.refused[i] and sha not in never:
                            return True
        return False


def _report_parts(cfg: NetConfig, graph: Any, gstats: dict[str, Any], pool: list[Any], domains: list[str],
                  trojan_agents: set[int], seeded: dict[int, Any], state: _State, quiescent: bool,
                  policy: dict[str, Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """meta, rounds and final in the Swarm Sim v2 schema (plora.swarm.report), from the agents' own records."""
    from plora.swarm.theory import predict

    by_sha = {p.sha256: p for p in pool}
    honest = [i for i in range(cfg.agents) if i not in trojan_agents]
    _, comp = graph.components()
    reach = {d: [i for i in honest if int(comp[i]) in {int(comp[k]) for k in honest if seeded[k].domain == d}]
             for d in domains}

    def has(held: dict[str, str], d: str | None) -> bool:  # d None: any trojan; else a clean plasmid of d
        return any((p := by_sha.get(s)) is not None and (p.trojan if d is None else p.domain == d and not p.trojan)
                   for s in held.values())

    initial = {i: {p.plasmid_id: p.sha256} for i, p in seeded.items()}
    rounds: list[dict[str, Any]] = []
    full: dict[str, int | None] = {d: None for d in domains}
    gate = {"accepted_clean": 0, "accepted_trojan": 0, "rejected_clean": 0, "rejected_trojan": 0}
    reasons: dict[str, int] = {}
    breakdown = {"inventory": 0, "manifest": 0, "artifact": 0}
    for row in [{"round": 0, "contacts": 0, "events": [], "inventory": 0, "held": initial}] + state.rows:
        ok = [e for e in row["events"] if "error" not in e and e["sha256"] in by_sha]
        for e in ok:
            label = "trojan" if by_sha[e["sha256"]].trojan else "clean"
            gate[f"{'accepted' if e['accepted'] else 'rejected'}_{label}"] += 1
            for code in [] if e["accepted"] else e.get("codes", []):
                reasons[code] = reasons.get(code, 0) + 1
        man = sum(int(e.get("manifest_bytes", 0)) for e in row["events"])
        art = sum(int(e.get("artifact_bytes", 0)) for e in row["events"])
        for k, v in (("inventory", row["inventory"]), ("manifest", man), ("artifact", art)):
            breakdown[k] += v
        cov, cov_reach = {}, {}
        for d in domains:
            cov[d] = round(sum(has(row["held"][i], d) for i in honest) / max(1, len(honest)), 6)
            got = sum(has(row["held"][i], d) for i in reach[d])
            cov_reach[d] = round(got / len(reach[d]), 6) if reach[d] else None
            if full[d] is None and reach[d] and got == len(reach[d]):
                full[d] = row["round"]
        n_acc = sum(1 for e in ok if e["accepted"])
        rounds.append({"round": row["round"], "coverage": cov, "coverage_reachable": cov_reach,
                       "trojan_prevalence": round(sum(has(row["held"][i], None) for i in honest) / max(1, len(honest)),
                                                  6),
                       "contacts": row["contacts"], "offers": len(ok), "accepted": n_acc, "rejected": len(ok) - n_acc,
                       "bytes": row["inventory"] + man + art})
    last = rounds[-1]
    starts = [sum(has(initial[i], d) for i in reach[d]) / max(1, len(reach[d])) for d in domains]
    meta = {
        "engine": "net", "seed": cfg.seed, "agents": cfg.agents, "honest_agents": len(honest),
        "trojan_agents": len(trojan_agents), "domains": domains,
        "graph": {**gstats, "reachable": {d: len(v) for d, v in reach.items()}},
        "policy": policy,
        "flags": cfg.flags(),
        "pool": [p.public() for p in pool],
        "extra": {"trojan_agent_ids": sorted(trojan_agents),
                  "initial": {f"a{i}": p.plasmid_id for i, p in seeded.items()},
                  "agents_died": {f"a{i}": r for i, r in state.died.items()},
                  "transfer_errors": sum(1 for row in state.rows for e in row["events"] if "error" in e),
                  "contact_errors": state.errors[:50],
                  "bytes": "as sent: inventories (protobuf, manifests included), plora.yml + adapter_config.json "
                           "and artifact of every fetch, counted by the receiving agents"},
    }
    final = {
        "bytes_on_wire": sum(breakdown.values()), "bytes_breakdown": breakdown,
        "accepted_offers": gate["accepted_clean"] + gate["accepted_trojan"], "offers": sum(r["offers"] for r in rounds),
        "coverage": last["coverage"], "coverage_reachable": last["coverage_reachable"],
        "rounds_to_full_coverage": full, "rounds_run": last["round"], "quiescent": quiescent,
        "trojan_prevalence": last["trojan_prevalence"],
        "gate": {**gate, "false_negatives": gate["accepted_trojan"], "false_positives": gate["rejected_clean"],
                 "rejection_reasons": dict(sorted(reasons.items()))},
        "theory": predict([graph.degrees[np.array(reach[d], dtype=int)] for d in domains], starts, domains),
    }
    return meta, rounds, final


def _progress(cfg: NetConfig) -> Any:
    if not cfg.progress:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("swarm net rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=True)
    progress.add_task("rounds", total=cfg.rounds)
    progress.start()
    return progress
