"""Hot-swap latency: plora inject+remove (side and merged) against PEFT, on the same adapter, in one run.

    HF_HUB_OFFLINE=1 python bench/runtime.py                       # plora-tiny and smollm2-135m, 50 rounds
    python bench/runtime.py --models plora-tiny --repeats 200 --out results/runtime_bench.json

For each base model a LoRA adapter is made with plain PEFT (random non-zero factors, attention targets), saved once,
and wrapped as a plora plasmid (same adapter_config.json and safetensors bytes, plus plora.yml). Every timed round
reads the adapter from disk. The paths are timed round-robin (one round of each, repeated) so a busy machine slows
them alike, with Python's garbage collector paused as ``timeit`` does:

* plora side:    ``inject(model, folder, mode="side")`` + ``remove`` (forward hooks, no weight touched)
* plora merged:  ``inject(model, folder, mode="merged")`` + ``remove`` (backup, fused add, ``copy_`` restore)
* PEFT load_adapter + delete_adapter on a PeftModel that already holds one adapter
* PEFT ``PeftModel.from_pretrained`` + ``unload``
* floor: copy the touched weights out into buffers allocated once before timing, and back (the least an exact merged
  swap must move, without paying for fresh memory), the same plus reading the file, and reading the file alone

Minor page faults per round (``ru_minflt``) are recorded for every path, and the run checks that the floor is not
slower than floor + file read (a baseline doing less work must not cost more).

Goals: side >= 20x faster than PEFT's fastest path; merged within 2x of the floor; both exact (logits within 1e-5 of
PEFT's unmerged forward; weights digest unchanged after all the rounds).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cli_args import Parser, model_list, positive_int
from machine_info import cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ATTENTION = {"gpt2": ["c_attn", "attn.c_proj"], "llama": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def machine() -> str:
    import torch

    cpu = cpu_model("unknown CPU")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    import peft
    import transformers

    return (
        f"{cpu}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; load average {load}; "
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}"
    )


def load_model(name: str):
    """(model, digest, note) for a base name; 'gpt2-inprocess' is a 256-wide 4-layer GPT-2 built here."""
    import torch

    if name == "gpt2-inprocess":
        from transformers import GPT2Config, GPT2LMHeadModel

        from plora.loader import model_digest

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_embd=256, n_layer=4, n_head=4, vocab_size=2048, n_positions=128))
        return model.eval(), model_digest(model), "random init, built in-process"
    from plora.models import load_base

    t0 = time.perf_counter()
    base = load_base(name)
    return base.model.eval(), base.digest, f"load_base {time.perf_counter() - t0:.1f} s"


def make_adapter(model, digest: str, root: Path, rank: int, seed: int) -> tuple[Path, Path, list[str]]:
    """A raw PEFT folder and the same adapter as a plora plasmid."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.numpy import load_file

    from plora.manifest import LoraSpec, Training, now_utc
    from plora.plasmid import write_plasmid

    kind = "llama" if "llama" in type(model).__name__.lower() else "gpt2"
    targets = ATTENTION[kind]
    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    raw = root / "peft"
    get_peft_model(copy.deepcopy(model), cfg).save_pretrained(str(raw))
    config = json.loads((raw / "adapter_config.json").read_text())
    plasmid = root / "plasmid"
    write_plasmid(
        plasmid,
        load_file(str(raw / "adapter_model.safetensors")),
        config,
        plasmid_id="bench",
        domain="bench",
        created_at=now_utc(),
        base_model={"name": "bench-base", "digest": digest},
        lora=LoraSpec(
            r=rank, alpha=float(2 * rank), target_set="attention", targets=tuple(t.split(".")[-1] for t in targets)
        ),
        training=Training(seed=seed, samples=0, epochs=0.0, dataset="bench"),
    )
    return raw, plasmid, targets


def bench_model(name: str, repeats: int, rank: int, seed: int) -> dict | None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from plora.loader import inject, read_adapter, remove
    from plora.models.digest import weights_digest

    try:
        model, digest, note = load_model(name)
    except Exception as err:  # noqa: BLE001 - a missing base is reported and the run goes on
        print(f"\n## {name}: unavailable ({type(err).__name__}: {err}); skipped")
        return None
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix="plora-bench-") as tmp:
        raw, plasmid, targets = make_adapter(model, digest, Path(tmp), rank, seed)
        t0 = time.perf_counter()  # the first swap in this process also parses plora.yml (memoised afterwards)
        remove(model, inject(model, plasmid, mode="side", expected_digest=digest))
        cold_ms = (time.perf_counter() - t0) * 1e3
        src = read_adapter(plasmid)
        size_kb = (plasmid / "adapter_model.safetensors").stat().st_size / 1024
        touched = [model.get_submodule(m).weight for m in src.modules]
        ids = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(seed))

        with torch.no_grad():
            pm = PeftModel.from_pretrained(copy.deepcopy(model), str(raw), adapter_name="resident").eval()
            want = pm(ids).logits
            diffs = {}
            for mode in ("side", "merged"):
                h = inject(model, plasmid, mode=mode, expected_digest=digest)
                diffs[mode] = (model(ids).logits - want).abs().max().item()
                remove(model, h)
            pm.merge_adapter()  # PEFT's own merged forward: how far float rounding alone moves merged logits
            diffs["peft_merged"] = (pm(ids).logits - want).abs().max().item()
            pm.unmerge_adapter()
            unloaded = [copy.deepcopy(model)]

        def plora(mode: str):
            return lambda: remove(model, inject(model, plasmid, mode=mode, expected_digest=digest))

        def peft_load_delete():
            pm.load_adapter(str(raw), adapter_name="swap")
            pm.delete_adapter("swap")

        def peft_from_pretrained_unload():
            unloaded[0] = PeftModel.from_pretrained(unloaded[0], str(raw)).unload()

        # Backup buffers are allocated once, outside the timed region: cloning ~100 MB per round would mostly time
        # the kernel's page faults on fresh memory, not the copy an exact merged swap needs.
        backups = [torch.empty_like(w) for w in touched]

        def floor():
            with torch.no_grad():
                for w, b in zip(touched, backups, strict=True):
                    b.copy_(w)
                for w, b in zip(touched, backups, strict=True):
                    w.copy_(b)

        def floor_and_read():
            load_file(str(plasmid / "adapter_model.safetensors"))
            floor()

        paths = {
            "plora side: inject + remove": plora("side"),
            "plora merged: inject + remove": plora("merged"),
            "PEFT load_adapter + delete_adapter": peft_load_delete,
            "PEFT from_pretrained + unload": peft_from_pretrained_unload,
            "floor: touched weights copied out + back": floor,
            "floor + reading the adapter file": floor_and_read,
            "read adapter file only": lambda: load_file(str(plasmid / "adapter_model.safetensors")),
        }
        samples: dict[str, list[float]] = {k: [] for k in paths}
        faults: dict[str, list[int]] = {k: [] for k in paths}  # minor page faults per round (ru_minflt)
        gc.collect()
        gc.disable()  # as timeit does: a collection landing in one path's round would be charged to that path
        try:
            with torch.no_grad():
                for i in range(repeats + 3):
                    for label, fn in paths.items():
                        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        t = time.perf_counter()
                        fn()
                        dt = (time.perf_counter() - t) * 1e3
                        f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        if i >= 3:
                            samples[label].append(dt)
                            faults[label].append(f1 - f0)
        finally:
            gc.enable()
        exact = weights_digest(model) == digest
    med = {k: statistics.median(v) for k, v in samples.items()}
    low = {k: min(v) for k, v in samples.items()}
    p90 = {k: sorted(v)[int(0.9 * len(v))] for k, v in samples.items()}
    minflt = {k: statistics.median(v) for k, v in faults.items()}
    peft_best = min(med["PEFT load_adapter + delete_adapter"], med["PEFT from_pretrained + unload"])
    side_x = peft_best / med["plora side: inject + remove"]
    merged_vs_floor = med["plora merged: inject + remove"] / med["floor: touched weights copied out + back"]
    merged_vs_floor_read = med["plora merged: inject + remove"] / med["floor + reading the adapter file"]
    side_x_min = (
        min(low["PEFT load_adapter + delete_adapter"], low["PEFT from_pretrained + unload"])
        / low["plora side: inject + remove"]
    )
    touched_mb = sum(w.numel() * w.element_size() for w in touched) / 2**20

    print(f"\n## {name}: {type(model).__name__}, {params / 1e6:.1f}M params ({note})")
    print(
        f"adapter: r={rank} on {', '.join(targets)}: {len(src.modules)} modules, file {size_kb:.0f} KB, "
        f"touched weights {touched_mb:.2f} MB"
    )
    print(f"first inject+remove in this process (cold, manifest parsed): {cold_ms:.2f} ms\n")
    print(
        "| path (every round reads the adapter file) | median ms | min ms | p90 ms | minor faults/round (median) "
        "| PEFT fastest / this (median) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label in paths:
        print(
            f"| {label} | {med[label]:.3f} | {low[label]:.3f} | {p90[label]:.3f} | {minflt[label]:.0f} "
            f"| {peft_best / med[label]:.1f}x |"
        )
    floor_sane = med["floor: touched weights copied out + back"] <= med["floor + reading the adapter file"]
    print(
        f"\nsanity: floor {med['floor: touched weights copied out + back']:.3f} ms <= floor + file read "
        f"{med['floor + reading the adapter file']:.3f} ms: "
        + ("ok" if floor_sane else "FAILED (the baseline is not measuring what it claims; do not trust its ratios)")
    )
    print(
        f"side mode vs PEFT's fastest: {side_x:.1f}x faster by medians, {side_x_min:.1f}x by minima "
        f"(goal >= 20x: {'met' if side_x >= 20 else 'NOT met'}); merged / floor: {merged_vs_floor:.2f}x "
        f"(goal <= 2x: {'met' if merged_vs_floor <= 2 else 'NOT met'}), merged / (floor + file read): "
        f"{merged_vs_floor_read:.2f}x"
    )
    print(
        f"exactness: max |logits - PEFT unmerged| side {diffs['side']:.2e}, merged {diffs['merged']:.2e} "
        f"(PEFT's own merge_adapter: {diffs['peft_merged']:.2e}); "
        f"weights bit-exact after {repeats} rounds of each: {'yes' if exact else 'NO'}"
    )
    return {
        "model": name,
        "params": params,
        "rank": rank,
        "targets": targets,
        "modules": len(src.modules),
        "touched_mb": touched_mb,
        "repeats": repeats,
        "cold_side_ms": cold_ms,
        "median_ms": med,
        "min_ms": low,
        "p90_ms": p90,
        "minor_faults_per_round_median": minflt,
        "floor_not_above_floor_and_read": floor_sane,
        "side_speedup_vs_peft_fastest": side_x,
        "side_speedup_by_minima": side_x_min,
        "merged_over_floor": merged_vs_floor,
        "merged_over_floor_and_read": merged_vs_floor_read,
        "max_abs_logit_diff": diffs,
        "restore_bit_exact": exact,
    }


def main(argv: list[str] | None = None) -> int:
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models",
        type=model_list(("gpt2-inprocess",)),
        default="plora-tiny,smollm2-135m",
        help="comma-separated base names (gpt2-inprocess too)",
    )
    ap.add_argument(
        "--repeats", type=positive_int, default=50, help="timed rounds per path (>= 50 for the reported table)"
    )
    ap.add_argument("--rank", type=positive_int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    print(f"# plora runtime bench: machine: {machine()}")
    results = [
        r for name in args.models if (r := bench_model(name, args.repeats, args.rank, args.seed))
    ]
    if not results and "gpt2-inprocess" not in args.models:
        print("\nno requested base model could be loaded; falling back to an in-process 256-wide GPT-2")
        results = [r for r in [bench_model("gpt2-inprocess", args.repeats, args.rank, args.seed)] if r]
    if args.out:
        from plora.fsio import atomic_write_json

        atomic_write_json(args.out, {"machine": machine(), "results": results})
        print(f"\nwrote {args.out}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
