"""Seed shim: ``python -m swarm_v2 ...`` is ``plora swarm sim ...`` (no parser or logic here)."""

from plora.cli.main import run_standalone
from plora.cli.swarm import sim

if __name__ == "__main__":
    run_standalone(sim, prog_name="python -m swarm_v2")
