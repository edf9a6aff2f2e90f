"""Seed shim: ``python -m scripts.evaluate_v2 --reports results --out results/summary_v2.json`` is
``plora swarm summarise ...`` (no parser or logic here)."""

from plora.cli.main import run_standalone
from plora.cli.swarm import summarise

if __name__ == "__main__":
    run_standalone(summarise, prog_name="python -m scripts.evaluate_v2")
