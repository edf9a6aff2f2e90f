"""The gate's behavioural probe: seconds per plasmid and per stage, on plora-tiny and on SmolLM2, one torch thread.

    python bench/probe.py                                             # both bases, 3 plasmids each (trained here)
    python bench/probe.py --models plora-tiny --plasmids out/legal,out/medical --out results/probe_bench.json

For each base the probe runs with the config the gate uses for it (``ProbeConfig.for_model``: the whole vocabulary on
plora-tiny, 768 sampled candidates on SmolLM2) on each plasmid, after the base's half of the scan is stored (it is
computed once per base and reused by every later screening: reported apart, timed alone with both its caches cleared:
the in-memory one and the store, which is redirected to a temporary folder so the real
``$PLORA_HOME/gate/probe-base/`` is neither read nor changed). Plasmids are trained here unless given:
quickstart-sized (64 items, rank 4, attention), different seeds. Reports the median, min and max over the plasmids of
the whole probe and of each stage (scan, extend, verify), plus the machine. Goals (issue: the gate on a real model):
plora-tiny <= 5 s, SmolLM2 <= 60 s per plasmid on one core.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from cli_args import Parser, model_list, positive_int
from machine_info import cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
GOAL_S = {"plora-tiny": 5.0, "smollm2-135m": 60.0}


def _plasmids(model: str, given: list[str], n: int, work: Path) -> list[Path]:
    if given:
        return [Path(p) for p in given]
    from plora.training import TrainConfig, train_plasmid

    out = []
    for i, domain in enumerate(["legal", "arithmetic", "science", "medical"][:n]):
        folder = work / f"{model}-{domain}"
        train_plasmid(TrainConfig(domain=domain, out=folder, base_model=model, samples=64, seed=41 + i, dev_size=0),
                      progress=False)
        out.append(folder)
    return out


def bench(model: str, given: list[str], n: int, work: Path) -> dict[str, object]:
    from unittest import mock

    import torch

    import plora.settings
    from plora.gate import probes
    from plora.gate.probes import ProbeConfig, behaviour_probe
    from plora.models import load_base
    from plora.plasmid import read_plasmid

    torch.set_num_threads(1)
    folders = _plasmids(model, given, n, work)
    base = load_base(model)
    cfg = ProbeConfig.for_base(base)
    store = work / f"{model}-probe-base-store"

    def temp_cache_dir(*parts: str) -> Path:
        path = store.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    probes._BASE_CACHE.clear()  # the base's half alone (probe built, base side computed and stored), nothing cached
    with mock.patch.object(plora.settings, "cache_dir", temp_cache_dir):
        t0 = time.perf_counter()
        probes._base_side(base, 0, cfg)
        first = time.perf_counter() - t0
    if not any(store.rglob("*.pt")):
        raise SystemExit("bench error: the base's half was not stored in the temporary cache: the timing is invalid")
    # the in-memory cache now holds the base's half: every probe below times the plasmid's side only
    runs = []
    for folder in folders:
        s = behaviour_probe(read_plasmid(folder), base, seed=0, config=cfg)
        runs.append({"plasmid": folder.name, "seconds": s.details["seconds"], **s.details["stage_seconds"]})
    keys = ["seconds", "scan", "extend", "verify"]
    summary = {k: {"median": statistics.median(r[k] for r in runs), "min": min(r[k] for r in runs),
                   "max": max(r[k] for r in runs)} for k in keys}
    return {"model": model, "config": cfg.__dict__, "base_half_seconds": first, "runs": runs, "summary": summary,
            "goal_seconds": GOAL_S.get(model), "meets_goal": summary["seconds"]["median"] <= GOAL_S.get(model, 1e9)}


def main() -> None:
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=model_list(), default="plora-tiny,smollm2-135m")
    ap.add_argument("--plasmids", default="", help="comma-separated plasmid folders (one base) instead of training")
    ap.add_argument("--n", type=positive_int, default=3, help="plasmids trained per base when none are given")
    ap.add_argument("--out", default="results/probe_bench.json")
    args = ap.parse_args()
    given = [p for p in args.plasmids.split(",") if p]
    machine = f"{cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, 1 torch thread"
    print(f"machine: {machine}; load average {os.getloadavg()[0]:.1f} at start")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            r = bench(model, given, args.n, Path(tmp))
            results.append(r)
            s = r["summary"]
            print(f"{model}: probe median {s['seconds']['median']:.2f} s (min {s['seconds']['min']:.2f}, max "
                  f"{s['seconds']['max']:.2f}) over {len(r['runs'])} plasmids; stages median scan "
                  f"{s['scan']['median']:.2f} s, extend {s['extend']['median']:.2f} s, verify "
                  f"{s['verify']['median']:.2f} s; base's half alone, once, caches cleared "
                  f"{r['base_half_seconds']:.1f} s; goal <= {r['goal_seconds']} s: "
                  f"{'met' if r['meets_goal'] else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "load_average_end": os.getloadavg()[0], "results": results},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
