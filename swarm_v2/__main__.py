"""Seed-compatible shim: ``python -m swarm_v2 ...`` is ``plora swarm sim ...`` (no logic here)."""

from plora.cli.swarm import run_standalone

if __name__ == "__main__":
    run_standalone("sim")
