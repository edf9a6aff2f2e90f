"""Seed-compatible shim: ``python -m scripts.evaluate_v2 --reports results --out results/summary_v2.json`` is
``plora swarm summarise ...`` (no logic here)."""

from plora.cli.swarm import run_standalone

if __name__ == "__main__":
    run_standalone("summarise")
