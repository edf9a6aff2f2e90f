"""Seed entry point: ``python -m scripts.run_lora_value_add ...`` is ``plora value-add ...``."""

from plora.cli.experiments import value_add
from plora.cli.main import run_standalone

if __name__ == "__main__":
    run_standalone(value_add, prog_name="python -m scripts.run_lora_value_add")
