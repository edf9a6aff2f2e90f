"""The executor seam's overhead: the same `plora swarm sweep` grid on the local process pool and on a local Ray.

    python bench/sweep_backends.py                        # 100 runs at N = 1e5 (5 trojan rates x 4 TPRs x 5 seeds)
    python bench/sweep_backends.py --agents 100000 --jobs 2 --out results/bench_sweep_backends.json

One process, an untimed warm-up pass on the process pool (so neither process-pool pass pays for a cold start: first
imports, page cache, the pool's files), then three timed passes over the same grid, each into a fresh folder (nothing
reused): process pool, Ray, process pool again (the machine's load drifts; the ratio is Ray over the mean of the two
timed process-pool passes). Ray is started
before its pass (``ray.init(num_cpus=jobs)``, timed on its own line), so a pass times what a sweep on a running cluster
pays: task dispatch, worker start and imports, results back. ``runs`` is run_tasks' wall time; ``sum`` adds up the
runs' own run_simulation times. The rows of every pass must be identical except their timings, or the bench fails.
The pool is the cached default pool (built on a cold cache first, not timed); runs use the gate model.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from cli_args import Parser, positive_int, positive_int_csv
from machine_info import cpu_model


def ray_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return "not installed"


def main() -> None:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=positive_int_csv, default="100000")
    ap.add_argument("--graph_p", default="0.0001", help="ER edge probability (1e-4 at N = 1e5: mean degree 10)")
    ap.add_argument("--trojan_rate", default="0,0.00001,0.0001,0.001,0.01")
    ap.add_argument("--gate_tpr", default="0.5,0.75,0.875,1")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--jobs", type=positive_int, default=2, help="worker processes, and Ray's CPUs")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    from plora.executor import ExecutorConfig, start_local_ray
    from plora.swarm.sweep import make_sweep, plan_runs, prepare_pool, run_sweep

    def grid(out: Path):  # noqa: ANN202
        return make_sweep(
            agents=args.agents,
            graph_p=args.graph_p,
            trojan_rate=args.trojan_rate,
            gate_tpr=args.gate_tpr,
            seeds=args.seeds,
            out=str(out),
            resume=False,
        )

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}, ray {ray_version()}; "
          f"load {os.getloadavg()[0]:.2f} (1 min) at start")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        runs = plan_runs(grid(Path(tmp) / "plan"))
        t0 = time.perf_counter()
        prepare_pool(grid(Path(tmp) / "plan"), runs, ExecutorConfig(jobs=args.jobs), progress=True)
        print(f"grid: {len(runs)} runs at N = {args.agents}; pool ready in {time.perf_counter() - t0:.1f} s")
        passes = []
        warmup: dict[str, object] = {}
        for name in ("warm-up", "processes", "ray", "processes"):
            if name == "warm-up":  # untimed: the two process-pool passes below then start equally warm
                executor = ExecutorConfig(jobs=args.jobs)
                t0 = time.perf_counter()
                outcome = run_sweep(grid(Path(tmp) / "warm-up"), executor, progress=False)
                warmup = {"backend": "processes", "runs": len(outcome.rows), "wall_s": time.perf_counter() - t0,
                          "rows": [{k: v for k, v in r.items() if k != "timings"} for r in outcome.rows]}
                print(f"   warm-up: {len(outcome.rows)} runs on the process pool in {warmup['wall_s']:.1f} s "
                      "(not counted)", flush=True)
                continue
            executor = ExecutorConfig(jobs=args.jobs, ray_address="local" if name == "ray" else None)
            if name == "ray":
                print(f"ray: local start with {args.jobs} CPUs took {start_local_ray(args.jobs):.1f} s (not counted)")
            load = os.getloadavg()[0]
            outcome = run_sweep(grid(Path(tmp) / f"{len(passes)}-{name}"), executor, progress=False)
            summary = json.loads(outcome.summary_path.read_text())
            t = summary["timings"]
            passes.append(
                {
                    "backend": name,
                    "runs": len(outcome.rows),
                    "failed": len(outcome.failures),
                    "runs_s": t["runs_s"],
                    "run_seconds_sum": t["run_seconds_sum"],
                    "load_1m": round(load, 2),
                    "rows": [{k: v for k, v in r.items() if k != "timings"} for r in outcome.rows],
                }
            )
            print(
                f"{name:>10}: {len(outcome.rows)} runs in {t['runs_s']:.1f} s (sum of run times "
                f"{t['run_seconds_sum']:.1f} s), load {load:.2f} before",
                flush=True,
            )
    same = all(p["rows"] == passes[0]["rows"] for p in passes) and warmup["rows"] == passes[0]["rows"]
    warmup.pop("rows")
    proc = (passes[0]["runs_s"] + passes[2]["runs_s"]) / 2
    ratio = passes[1]["runs_s"] / proc
    print(
        f"ray / process pool: {ratio:.2f}x ({passes[1]['runs_s']:.1f} s vs {proc:.1f} s mean); rows identical "
        f"on every pass: {same}; load {os.getloadavg()[0]:.2f} at end"
    )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        for p in passes:
            p.pop("rows")
        out.write_text(
            json.dumps(
                {
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                    "python": platform.python_version(),
                    "ray": ray_version(),
                    "warmup_untimed": warmup,
                    "grid": vars(args),
                    "passes": passes,
                    "ratio": round(ratio, 3),
                    "rows_identical": same,
                },
                indent=2,
            )
        )
        print(f"wrote {out}")
    if not same:
        sys.exit("rows differ between backends")


if __name__ == "__main__":
    main()
