"""Seed-compatible shim: one plasmid trained on the union of several domains (no logic here).

    python -m scripts.monolithic_train --domains arithmetic,legal,medical --epochs 1 --samples 64 --rank 4 \
        --output out/monolithic_r4

Calls :func:`plora.training.monolithic.train_monolithic`; ``--samples`` caps each domain's draw.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.monolithic_train", description=__doc__.splitlines()[0])
    parser.add_argument("--domains", required=True, help="comma-separated domains, e.g. arithmetic,legal,medical")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the union of training items")
    parser.add_argument("--samples", type=int, default=None, help="cap per domain (PLORA_SAMPLES also caps)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank")
    parser.add_argument("--output", required=True, help="plasmid folder to write")
    parser.add_argument("--seed", type=int, default=41, help="seed for sampling, init and data order")
    parser.add_argument("--base-model", default=None, help="base model [default: PLORA_BASE_MODEL or plora-tiny]")
    parser.add_argument("--targets", default="attention", help="attention, mlp or all")
    parser.add_argument("--dev-size", type=int, default=128, help="dev items per domain for the metrics (0: none)")
    args = parser.parse_args(argv)

    from plora.errors import PloraError
    from plora.training.monolithic import train_monolithic

    try:
        m = train_monolithic(
            args.domains.split(","),
            args.output,
            epochs=args.epochs,
            samples=args.samples,
            rank=args.rank,
            seed=args.seed,
            base_model=args.base_model,
            targets=args.targets,
            dev_size=args.dev_size,
        )
    except PloraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    mt = m.metrics
    print(f"plasmid {m.plasmid_id} ({m.domain}, {m.training.samples} items, {m.training.steps} steps) -> {args.output}")
    if mt is not None and mt.dev_size:
        print(f"union dev NLL {mt.nll_before:.3f} -> {mt.nll_after:.3f} on {mt.dev_size} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
