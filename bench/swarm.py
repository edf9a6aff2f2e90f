"""Swarm Sim v2 at scale: wall time, time per round and peak memory for N = 1e3 ... 1e7 agents.

    python bench/swarm.py                                  # N = 1e3, 1e4, 1e5, 1e6, 1e7; ER mean degree 10; 4 domains
    python bench/swarm.py --sizes 1e3,1e6 --pool fixed     # engine only: verdicts fixed by hand (no trained pool)
    python bench/swarm.py --out results/bench_swarm.json
    python bench/swarm.py --recall --sizes 1e6 --today ../main/src   # revocation: spread vs purge, 2x wall, scoring

Each N runs in its own subprocess (so each peak RSS is its own: ``ru_maxrss`` of that process) doing exactly what
``python -m swarm_v2 --agents N --graph_p 10/(N-1) --security on --trojan_rate 0.01 --rounds 200`` does: generate the
overlay, find its components, run push-pull until nothing can change (or 200 rounds), compute the theory and write
the report (JSON + PNG). ``--pool real`` (the default) uses the trained pool and the real gate's cached verdicts: the
pool is built and screened once, in the parent, before any timing (cold: minutes; warm: a second), and reported on its
own line. ``wall`` is the child's whole life (interpreter start and imports included); ``run`` is run_simulation's
own total. A size that fails or passes ``--timeout`` is reported as such and the larger ones are skipped.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_args import Parser, positive_float, positive_int_list
from machine_info import cpu_model

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from plora.swarm import make_config, run_simulation
from plora.swarm.pool import FixedVerdicts, PlasmidPool, PoolEntry, PoolSpec
n, pool_kind, report_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
domains = ("arithmetic", "legal", "medical", "science")
cfg = make_config(agents=n, graph_p=min(1.0, 10 / max(n - 1, 1)), security=True, trojan_rate=0.01, rounds=200,
                  domains=domains, report_dir=report_dir, seed=1)
if pool_kind == "real":
    provider = PlasmidPool.build(PoolSpec(domains=domains), progress=False)
else:
    es = [PoolEntry(f"{k}-{d}", d, k == "trojan", f"{i:064x}", 30_000, 2_000)
          for i, (d, k) in enumerate((d, k) for d in domains for k in ("clean", "trojan"))]
    provider = FixedVerdicts(es, [not e.trojan for e in es])
report = run_simulation(cfg, provider)
t = report["meta"]["timings"]
f = report["final"]
per_round = t["seconds_per_round"]
print(json.dumps({
    "n": n, "edges": report["meta"]["graph"]["edges"], "isolated": report["meta"]["graph"]["isolated"],
    "rounds": f["rounds_run"], "quiescent": f["quiescent"], "graph_s": t["graph_s"], "pool_s": t["pool_s"],
    "engine_s": t["engine_s"], "report_s": t["report_s"], "run_s": t["total_s"],
    "ms_per_round": round(1000 * sum(per_round) / max(len(per_round), 1), 1),
    "coverage_reachable_min": min(v for v in f["coverage_reachable"].values() if v is not None),
    "rounds_to_full": f["rounds_to_full_coverage"], "predicted": f["theory"]["mean_field_rounds"],
    "trojan_prevalence": f["trojan_prevalence"], "wall_in_child_s": round(time.perf_counter() - t0, 3),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


RECALL_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from plora.swarm import make_config, run_simulation
from plora.swarm.pool import FixedVerdicts, PoolEntry
flags, accept, report_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
domains = ("arithmetic", "legal", "medical", "science")
es = [PoolEntry(f"{k}-{d}", d, k == "trojan", f"{i:064x}", 30_000, 2_000)
      for i, (d, k) in enumerate((d, k) for d in domains for k in ("clean", "trojan"))]
ok = [not e.trojan or accept == "all" or e.domain == accept for e in es]  # which trojans the gate lets through
report = run_simulation(make_config(domains=domains, report_dir=report_dir, **flags), FixedVerdicts(es, ok))
t, f = report["meta"]["timings"], report["final"]
rec = f.get("recall") or {}
print(json.dumps({
    "rounds": f["rounds_run"], "graph_s": t["graph_s"], "engine_s": t["engine_s"], "recall_s": t.get("recall_s"),
    "run_s": t["total_s"], "wall_in_child_s": round(time.perf_counter() - t0, 3),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "bytes_on_wire": f["bytes_on_wire"], "prevalence": [r["trojan_prevalence"] for r in report["rounds"]],
    "recall": {k: v for k, v in rec.items() if k not in ("records", "theory", "arms")},
    "theory": {k: v for k, v in (rec.get("theory") or {}).items() if k != "curves"},
    "arms": {k: {x: y for x, y in a.items() if x not in ("holding", "trojan_holding")}
             for k, a in (rec.get("arms") or {}).items()},
}))
"""


def recall_bench(sizes: list[int], today: str | None, timeout: float, env: dict[str, str]) -> list[dict]:
    """Per N: the trojan spread alone (this checkout, and ``today``'s code if given), then a revocation issued the
    round after it reached every agent, then the same with both peer-scoring arms (1% trojan agents, one domain's
    trojan accepted)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as tmp:
        def child(label: str, flags: dict, accept: str, src: str | None = None) -> dict:
            run_env = {**env, "PYTHONPATH": src} if src else env
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", RECALL_CHILD, json.dumps(flags), accept, tmp],
                                  capture_output=True, text=True, timeout=timeout, env=run_env)
            if proc.returncode != 0:
                raise SystemExit(f"{label}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(label=label, n=flags["agents"], wall_s=round(time.perf_counter() - t0, 3))
            rows.append(row)
            rec = row["recall"]
            print(f"{flags['agents']:>10,} {label:<22} rounds {row['rounds']:>3}  wall {row['wall_s']:6.2f} s  "
                  f"(graph {row['graph_s']:.2f}, engine {row['engine_s']:.2f}, recall {row['recall_s'] or 0:.2f})  "
                  f"peak {row['peak_rss_mb']:.0f} MB"
                  + (f"  spread {rec['spread_rounds']} purge {rec['time_to_purge']} (mean field "
                     f"{row['theory'].get('spread_rounds')} / {row['theory'].get('time_to_purge')})"
                     if rec.get("revoke_at") else ""), flush=True)
            for name, arm in row["arms"].items():
                print(f"{'':>10} {name:<22} bytes {arm['bytes_on_wire']:,}  revoked-trojan exposure "
                      f"{arm.get('exposure', '-'):,}  trojan exposure {arm['trojan_exposure']:,}  graylisted "
                      f"{arm['graylisted']:,}  purged in {arm.get('time_to_purge')}", flush=True)
            return row

        for n in sizes:
            base = {"agents": n, "graph_p": min(1.0, 10 / max(n - 1, 1)), "security": True, "rounds": 200, "seed": 1,
                    "trojan_rate": 1 / n}
            first = child("spread only", base, "all")
            if today:
                child("spread only, today", base, "all", today)
            prev = first["prevalence"]
            spread = prev.index(max(prev))
            child("revoked at spread + 1", {**base, "revoke_at": spread + 1}, "all")
            child("peer scoring arms", {**base, "trojan_rate": 0.01, "revoke_at": spread + 1,
                                        "compare_peer_scoring": True}, "legal")
    return rows


def machine() -> dict[str, object]:
    import numpy
    import scipy

    cpu = cpu_model("")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def _sizes(text: str) -> list[int]:
    return positive_int_list(text, lambda s: int(float(s)))


def main() -> None:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=_sizes, default="1e3,1e4,1e5,1e6,1e7", help="comma-separated agent counts")
    ap.add_argument("--pool", choices=("real", "fixed"), default="real", help="trained pool + real gate, or fixed")
    ap.add_argument("--timeout", type=positive_float, default=900.0, help="seconds per size before giving up")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--recall", action="store_true", help="the revocation scenarios instead (fixed verdicts)")
    ap.add_argument("--today", default=None, help="with --recall: also time the spread with the src/ of this checkout")
    args = ap.parse_args()
    sizes = args.sizes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_1m']} (1 min), "
          f"python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}")
    if args.recall:
        rows = recall_bench(sizes, args.today, args.timeout, env)
        info["load_average_1m_after"] = round(os.getloadavg()[0], 2)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
        return
    if args.pool == "real":
        t0 = time.perf_counter()
        from plora.swarm import make_config
        from plora.swarm.pool import PlasmidPool, PoolSpec
        from plora.swarm.sim import make_policy

        domains = ("arithmetic", "legal", "medical", "science")
        pool = PlasmidPool.build(PoolSpec(domains=domains), progress=True)
        verdicts = pool.verdicts(make_policy(make_config(domains=domains)))
        print(f"pool: {len(pool.entries)} plasmids, verdicts {[v.accepted for v in verdicts]}, "
              f"ready in {time.perf_counter() - t0:.1f} s (training/screening only on a cold cache)")
    header = f"{'N':>10} {'edges':>11} {'rounds':>6} {'wall s':>7} {'run s':>6} {'graph s':>7} {'engine s':>8} " \
             f"{'ms/round':>8} {'peak MB':>8} {'cov(reach) min':>14}"
    print(header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, "-c", CHILD, str(n), args.pool, tmp], capture_output=True,
                                      text=True, timeout=args.timeout, env=env)
            except subprocess.TimeoutExpired:
                print(f"{n:>10,} timed out after {args.timeout:.0f} s; stopping here")
                rows.append({"n": n, "error": f"timeout {args.timeout} s"})
                break
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{n:>10,} failed (exit {proc.returncode}): {tail}; stopping here")
                rows.append({"n": n, "error": tail})
                break
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["wall_s"] = round(wall, 3)
            rows.append(row)
            print(f"{n:>10,} {row['edges']:>11,} {row['rounds']:>6} {wall:>7.2f} {row['run_s']:>6.2f} "
                  f"{row['graph_s']:>7.2f} {row['engine_s']:>8.2f} {row['ms_per_round']:>8.1f} "
                  f"{row['peak_rss_mb']:>8.0f} {row['coverage_reachable_min']:>14.4f}", flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": info, "pool": args.pool, "rows": rows}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
