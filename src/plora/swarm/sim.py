"""Swarm Sim v2 end to end: overlay, roles, pool and verdicts, the vectorised engine, theory, and the report.

    >>> import json
    >>> from plora.swarm import SimConfig, run_simulation
    >>> _ = open("quick.json", "w").write(json.dumps({"probes": False}))   # the gate's cheap stages only
    >>> cfg = SimConfig(agents=6, rounds=5, graph_p=0.25, domains=("legal", "medical"), pool_dir="mypool",
    ...                 policy_file="quick.json", trojan_rate=0.0)
    >>> report = run_simulation(cfg, progress=False)    # every received plasmid screened by the gate
    >>> report["final"]["coverage_reachable"], report["final"]["gate"]["rejected_clean"]
    ({'legal': 1.0, 'medical': 1.0}, 0)
    >>> report["meta"]["timings"]["report_path"]
    'results/sim-v2-n6-seed0-....json'

Roles and initial holdings (all drawn from ``seed`` by :func:`plora.swarm.roles.assign_roles`, which the networked
swarm calls too): ``round(trojan_rate * agents)`` agents, chosen uniformly, are trojan agents and start holding a
trojan plasmid of their domain (agent i's domain is i mod D); by default each honest agent i starts with a clean
plasmid of domain i mod D; with ``sources=K``, K honest agents per domain (chosen uniformly) start with its clean
plasmid and everyone else starts empty. Every agent, trojan or not, screens what it
receives with the same policy. An honest agent counts as reachable for a domain when its connected component holds a
clean source of that domain; coverage is reported over all honest agents and over the reachable ones.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.swarm import graphs, theory
from plora.swarm.config import SimConfig
from plora.swarm.engine import EngineInput, PoolView, bitset_dtype, run_engine
from plora.swarm.pool import PlasmidPool, PoolSpec, Verdict, VerdictProvider
from plora.swarm.report import build_report, report_stem, write_report
from plora.swarm.revoke import plan_recall
from plora.swarm.roles import assign_roles


def stream_seeds(seed: int) -> tuple[int, int, int]:
    """Independent (graph, roles, rounds) seeds from one run seed; the networked swarm uses the same split."""
    children = np.random.SeedSequence(seed).spawn(3)
    graph_seed, role_seed, round_seed = (int(c.generate_state(1, np.uint64)[0] >> 1) for c in children)
    return graph_seed, role_seed, round_seed


def make_policy(cfg: SimConfig, trusted: list[str] | None = None) -> Any:
    """The gate policy the flags describe (None with security off).

    Policy defaults, then ``--policy_file``, then only the gate flags that were given (a flag left unset never
    overrides the file). The base model is the file's, else the pool's (``PLORA_BASE_MODEL`` or plora-tiny).
    ``trusted`` (or ``--trusted_pubkeys``) replaces the trusted keys when signatures are on; ``--trusted_pubkeys``
    without ``--signatures`` turns them on, as ``plora gate --trusted-keys`` does.
    """
    if not cfg.security:
        return None
    from plora.gate.policy import load_policy
    from plora.settings import choose_base_model

    policy = load_policy(
        cfg.policy_file,
        None,
        allowed_targets=[cfg.allowed_targets] if cfg.allowed_targets else None,
        allowed_ranks=list(cfg.allowed_ranks) if cfg.allowed_ranks else None,
        signatures=True if cfg.trusted_pubkeys and cfg.signatures is None else cfg.signatures,  # keys: verify
        tau_trigger=cfg.tau_trigger,
        tau_norm_z=cfg.tau_norm_z,
        tau_clean_delta=cfg.tau_clean_delta,
    )
    if "base_model" not in policy.model_fields_set:
        policy.base_model = choose_base_model(None)
    keys = list(trusted if trusted is not None else cfg.trusted_pubkeys)
    if policy.signatures and keys:
        policy.trusted_keys = keys
    return policy


def check_inputs(policy_file: str | None, train_domains: tuple[str, ...] = (), cfg: SimConfig | None = None) -> None:
    """What must hold before the graph and the pool cost any time (sim, net and sweep): the policy file reads, even
    with security off (a mistyped path is never silently unused), and the domains the pool will train plasmids
    for (none with ``--pool_dir``) are built-in ones. With ``cfg``, its policy (file and flags) can accept a signed
    pool plasmid: each carries ONE signature (clean: the swarm key's), so with the real gate's verdicts a quorum
    above 1 would reject them all."""
    if policy_file is not None:
        from plora.gate.policy import load_policy

        load_policy(policy_file)
    policy = make_policy(cfg) if cfg is not None else None
    if policy is not None and policy.signatures and policy.quorum > 1 and cfg is not None and cfg.gate_tpr is None:
        raise PloraError(f"quorum {policy.quorum} can never be met: each pool plasmid carries one signature (the "
                         "swarm key's); give a policy with quorum 1")
    if train_domains:
        from plora.data import DOMAINS

        unknown = [d for d in train_domains if d not in DOMAINS]
        if unknown:
            raise PloraError(f"unknown domain(s) {', '.join(unknown)}: the pool trains on the built-in domains "
                             f"{', '.join(DOMAINS)} (give --pool_dir for plasmids of other domains)")


def gate_setup(cfg: SimConfig, provider: VerdictProvider) -> tuple[VerdictProvider, Any]:
    """(the pool as the agents see it, the gate policy or None); shared by the sim and the networked swarm.

    With signatures on (flag or policy file), a trained pool is replaced by its signed copy (clean plasmids signed
    by the pool's swarm key, trojans by an intruder key), trusting ``--trusted_pubkeys``, else the policy file's
    ``trusted_keys``, else the swarm key (absolute paths, so agents in other folders find them).
    """
    policy = make_policy(cfg)
    if policy is not None and policy.signatures and isinstance(provider, PlasmidPool):
        provider, trusted = provider.signed(list(cfg.trusted_pubkeys) or list(policy.trusted_keys) or None)
        policy = make_policy(cfg, [str(Path(k).resolve()) for k in trusted])
    return provider, policy


def gate_model(cfg: SimConfig, template: VerdictProvider) -> VerdictProvider:
    """The gate model standing in for the real gate's verdicts (``--gate_tpr``), built on the pool's entries."""
    from plora.swarm.gate_model import GateModel, default_per_label, gate_seed

    return GateModel.from_template(
        template.entries, cfg.gate_tpr or 0.0, cfg.gate_fpr or 0.0,
        per_label=cfg.gate_plasmids or default_per_label(len(cfg.domains)), seed=gate_seed(cfg.seed),
        domains=cfg.domains, root=getattr(template, "root", None),
    )


def initial_state(cfg: SimConfig, pool: PoolView, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(holdings bitset, honest mask, trojan-agent mask) per agent, from :func:`plora.swarm.roles.assign_roles`."""
    roles = assign_roles(cfg.agents, pool.domain_of, pool.trojan, cfg.trojan_rate, seed, cfg.sources, pool.domains)
    dtype = bitset_dtype(pool.size)
    held = np.zeros(cfg.agents, dtype=dtype)
    has = roles.initial >= 0
    held[has] = (np.uint64(1) << roles.initial[has].astype(np.uint64)).astype(dtype)
    return held, roles.honest, roles.trojan_agents


def pool_view(provider: VerdictProvider, domains: tuple[str, ...]) -> PoolView:
    known = set(domains)
    stray = sorted({e.domain for e in provider.entries} - known)
    if stray:
        raise PloraError(f"pool holds domains {stray} not in --domains {','.join(domains)}")
    idx = {d: i for i, d in enumerate(domains)}
    es = provider.entries
    return PoolView(
        domains=list(domains),
        domain_of=np.array([idx[e.domain] for e in es], dtype=np.int64),
        trojan=np.array([e.trojan for e in es], dtype=bool),
        artifact_bytes=np.array([e.artifact_bytes for e in es], dtype=np.int64),
        manifest_bytes=np.array([e.manifest_bytes for e in es], dtype=np.int64),
    )


def run_simulation(
    cfg: SimConfig,
    provider: VerdictProvider | None = None,
    *,
    write: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Run one simulation and return its report (see plora.swarm.report); with ``write``, the JSON and PNG go to
    ``cfg.report_dir`` and the JSON's path is ``report["meta"]["timings"]["report_path"]``.

    ``progress``: say on stderr what the pool is training, and show a progress bar over rounds on a terminal."""
    t_start = time.perf_counter()
    if write:  # before the graph and the pool: a bad folder must not cost minutes of work
        from plora.outputs import check_report_dir

        check_report_dir(cfg.report_dir)
    pool_signed = provider is None or isinstance(provider, PlasmidPool)  # gate_setup signs it with one key
    check_inputs(cfg.policy_file, cfg.domains if provider is None and not cfg.pool_dir else (),
                 cfg if pool_signed else None)
    graph_seed, role_seed, round_seed = stream_seeds(cfg.seed)
    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    g = graphs.make_graph(
        cfg.graph, cfg.agents, p=cfg.graph_p, ws_k=cfg.ws_k, ws_beta=cfg.ws_beta, ba_m=cfg.ba_m, seed=graph_seed
    )
    _, labels = g.components()
    timings["graph_s"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    if provider is None and cfg.pool_dir:
        provider = PlasmidPool.from_dir(cfg.pool_dir)
    elif provider is None:
        provider = PlasmidPool.build(PoolSpec(domains=cfg.domains), progress=progress)
    provider, policy = gate_setup(cfg, provider)
    if cfg.gate_tpr is not None and policy is not None:
        provider = gate_model(cfg, provider)
    # security off: no gate runs, every transfer is accepted, whatever verdicts the provider would give
    verdicts = provider.verdicts(policy) if policy is not None else [Verdict(True) for _ in provider.entries]
    timings["pool_s"] = round(time.perf_counter() - t0, 3)
    view = pool_view(provider, cfg.domains)

    held, honest, trojan_agents = initial_state(cfg, view, role_seed)
    clean = view.clean_masks(held.dtype.type)
    reach = []
    for d in range(len(cfg.domains)):
        comp_has = np.zeros(int(labels.max()) + 1 if len(labels) else 0, dtype=bool)
        comp_has[labels[(held & clean[d]) != 0]] = True
        reach.append(comp_has[labels] & honest)

    t0 = time.perf_counter()
    recall_setup = plan_recall(cfg, provider, view, verdicts, policy, g, held, honest, labels)
    timings["recall_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    bar = _progress_bar(cfg) if progress and sys.stderr.isatty() else None
    engine_input = EngineInput(
        graph=g, pool=view, accept=np.array([[v.accepted for v in verdicts]]), holdings=held, honest=honest,
        rounds=cfg.rounds, seed=round_seed, max_fetch=cfg.max_fetch_per_contact, reachable=reach,
        progress=(lambda rnd, row: bar[0].update(bar[1], completed=rnd)) if bar else None,
        revocations=recall_setup.plan, scoring=recall_setup.scoring,
        record_recall=cfg.compare_peer_scoring,  # both arms report trojan holders per round, scoring on or off
    )
    try:
        result = run_engine(engine_input)
    finally:
        if bar:
            bar[0].stop()
    timings["engine_s"] = round(time.perf_counter() - t0, 3)
    other = None
    if cfg.compare_peer_scoring:  # the same seed, graph, roles and draws, peer scoring flipped
        t0 = time.perf_counter()
        other = run_engine(dataclasses.replace(engine_input, scoring=recall_setup.flipped, progress=None))
        timings["engine_other_arm_s"] = round(time.perf_counter() - t0, 3)
    timings["seconds_per_round"] = [round(s, 4) for s in result.seconds_per_round]

    t0 = time.perf_counter()
    deg = g.degrees
    predicted = theory.predict(
        [deg[r] for r in reach],
        [float(np.count_nonzero(((held & clean[d]) != 0) & r)) / max(int(r.sum()), 1) for d, r in enumerate(reach)],
        list(cfg.domains),
    )
    predicted["observed_rounds"] = dict(zip(cfg.domains, result.rounds_to_full, strict=True))
    stats = graphs.graph_stats(g, spectral=True)
    stats["reachable"] = {name: int(r.sum()) for name, r in zip(cfg.domains, reach, strict=True)}
    meta = {
        "engine": "sim-v2",
        "seed": cfg.seed,
        "flags": cfg.flags(),
        "agents": cfg.agents,
        "honest_agents": int(honest.sum()),
        "trojan_agents": int(trojan_agents.sum()),
        "domains": list(cfg.domains),
        "graph": stats,
        "pool": [
            {
                **e.public(),
                "verdict": {"accepted": v.accepted, "reasons": list(v.reasons)},
                "transfers": {"accepted": int(a), "rejected": int(r)},
            }
            for e, v, a, r in zip(
                provider.entries, verdicts, result.accepted.sum(axis=0), result.refused.sum(axis=0), strict=True
            )
        ],
        "policy": None if policy is None else policy.effective().model_dump(mode="json"),
        "timings": timings,
    }
    if hasattr(provider, "describe"):
        meta["extra"] = {"gate_model": provider.describe()}
    final = _final(result, view, verdicts, cfg.domains, predicted)
    final["recall"] = recall_setup.final(result, other, g, cfg)
    if result.bytes_revocation:
        final["bytes_breakdown"]["revocation"] = result.bytes_revocation
        final["bytes_on_wire"] += result.bytes_revocation
    report = build_report(meta, result.series, final)
    timings["report_s"] = round(time.perf_counter() - t0, 3)
    timings["total_s"] = round(time.perf_counter() - t_start, 3)
    timings["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["meta"]["timings"] = timings
    if write:
        timings["report_path"] = str(Path(cfg.report_dir) / f"{report_stem(report)}.json")
        write_report(report, cfg.report_dir)
    return report


def _final(result: Any, view: PoolView, verdicts: list[Any], domains: tuple[str, ...], theo: dict) -> dict[str, Any]:
    acc, ref = result.accepted.sum(axis=0), result.refused.sum(axis=0)
    tro = view.trojan
    reasons: Counter[str] = Counter()
    for i, v in enumerate(verdicts):
        for code in v.reasons:
            reasons[code] += int(ref[i])
    last = result.series[-1]
    gate = {
        "accepted_clean": int(acc[~tro].sum()),
        "accepted_trojan": int(acc[tro].sum()),
        "rejected_clean": int(ref[~tro].sum()),
        "rejected_trojan": int(ref[tro].sum()),
        "false_negatives": int(acc[tro].sum()),
        "false_positives": int(ref[~tro].sum()),
        "rejection_reasons": {k: n for k, n in sorted(reasons.items()) if n},
    }
    breakdown = {
        "inventory": result.bytes_inventory,
        "manifest": result.bytes_manifest,
        "artifact": result.bytes_artifact,
    }
    return {
        "bytes_on_wire": sum(breakdown.values()),
        "bytes_breakdown": breakdown,
        "accepted_offers": int(acc.sum()),
        "offers": int(acc.sum() + ref.sum()),
        "coverage": last["coverage"],
        "coverage_reachable": last["coverage_reachable"],
        "rounds_to_full_coverage": dict(zip(domains, result.rounds_to_full, strict=True)),
        "rounds_run": result.rounds_run,
        "quiescent": result.quiescent,
        "trojan_prevalence": last["trojan_prevalence"],
        "gate": gate,
        "theory": theo,
    }


def _progress_bar(cfg: SimConfig) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("swarm sim"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
    task = bar.add_task("rounds", total=cfg.rounds)
    bar.start()
    return bar, task


def format_summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    m, f = report["meta"], report["final"]
    path = m["timings"].get("report_path")
    g, gate = m["graph"], f["gate"]
    lines = [
        f"swarm sim v2: {m['agents']:,} agents ({m['trojan_agents']:,} trojan), {g['kind']} overlay, "
        f"{g['edges']:,} edges, mean degree {g['mean_degree']:.2f}, {g['isolated']:,} isolated, seed {m['seed']}",
        f"rounds run: {f['rounds_run']} ({'stopped: nothing could change' if f['quiescent'] else 'round limit'})",
    ]
    for name in m["domains"]:
        reach = f["coverage_reachable"].get(name)
        full = f["rounds_to_full_coverage"].get(name)
        pred = (f.get("theory") or {}).get("mean_field_rounds", {}).get(name)
        lines.append(
            f"  {name:<12} coverage {f['coverage'][name]:.3f} (reachable {'-' if reach is None else f'{reach:.3f}'})"
            f"  every reachable agent at round {'never' if full is None else full}  (mean-field prediction {pred})"
        )
    lines.extend(_after_coverage(report))
    lines.append(
        f"gate: accepted clean {gate['accepted_clean']:,} / trojan {gate['accepted_trojan']:,}; rejected clean "
        f"{gate['rejected_clean']:,} / trojan {gate['rejected_trojan']:,}; FN {gate['false_negatives']:,} "
        f"FP {gate['false_positives']:,}; reasons {gate['rejection_reasons'] or '-'}"
    )
    lines.append(
        f"trojan prevalence {f['trojan_prevalence']:.3f}; bytes on wire {f['bytes_on_wire']:,}; "
        f"accepted offers {f['accepted_offers']:,}; wall {m['timings'].get('total_s', 0):.2f} s"
    )
    lines.extend(recall_lines(f.get("recall")))
    if path is not None:
        extra = f", {Path(path).stem}-recall.png" if (f.get("recall") or {}).get("revoke_at") else ""
        lines.append(f"report: {path} (+ {Path(path).with_suffix('.png').name}{extra})")
    return "\n".join(lines)


def recall_lines(recall: dict[str, Any] | None) -> list[str]:
    """The terminal summary of ``final.recall`` (shared with ``plora swarm net``)."""
    if not recall:
        return []
    lines = []
    if recall.get("revoke_at") is not None:
        refused = [r for r in recall["records"] if not r["verified"]]
        theory = recall.get("theory") or {}
        spread = recall["spread_rounds"]
        reached = (f"trojan reached every reachable agent in {spread} rounds" if spread is not None else
                   "revoked before the trojan reached every reachable agent")
        purge = recall["time_to_purge"]
        verdict = "met" if recall["within_target"] else "missed"
        target = f" (target <= spread + 2: {verdict})" if spread and purge else ""
        lines.append(
            f"recall: {len(recall['records'])} revocation(s) issued at round {recall['revoke_at']} by agent "
            f"{recall['origin']}; {reached}, {f'purged in {purge} rounds' if purge else 'not purged'}{target}; "
            f"mean field {theory.get('spread_rounds')} / {theory.get('time_to_purge')}"
        )
        lines.append(
            f"  peak prevalence {recall['peak_prevalence']:.3f} (round {recall['peak_round']}), injecting "
            f"{recall['peak_injecting']:.3f}; exposure {recall['exposure']:,} agent-rounds (injecting "
            f"{recall['injecting_exposure']:,}); still holding at the end {recall['holding_at_end']:,}"
        )
        lines += [f"  refused by every receiver: {r['plasmid']}: {'; '.join(r['reasons'])}" for r in refused]
    scoring = recall.get("peer_scoring") or {}
    lines.append(f"peer scoring {'on' if scoring.get('enabled') else 'off'}: {scoring.get('graylisted', 0):,} "
                 "contact sides graylisted")
    for name, arm in (recall.get("arms") or {}).items():
        lines.append(
            f"  {name.replace('_', ' ')}: bytes {arm['bytes_on_wire']:,}, trojan exposure {arm['trojan_exposure']:,}"
            + (f", revoked-trojan exposure {arm['exposure']:,}, purged in {arm['time_to_purge']}"
               if "exposure" in arm else "")
            + f", graylisted {arm['graylisted']:,}"
        )
    return lines


def _after_coverage(report: dict[str, Any]) -> list[str]:
    """What the rounds after full coverage did: with the gate refusing trojans, the run goes on until every
    neighbour of a trojan holder has been offered it once and refused it (the stop rule: nothing can change)."""
    full = report["final"]["rounds_to_full_coverage"].values()
    if not full or None in full:
        return []
    last, run = max(full), report["final"]["rounds_run"]
    tail = [r for r in report["rounds"] if r["round"] > last]
    if not tail:
        return []
    accepted, refused = sum(r["accepted"] for r in tail), sum(r["rejected"] for r in tail)
    return [
        f"full coverage at round {last}; rounds {last + 1}-{run} screened what was still on offer: "
        f"{refused:,} refused, {accepted:,} accepted (pass --rounds {last} to stop at full coverage)"
    ]
