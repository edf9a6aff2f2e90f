"""Seed shim: ``python -m scripts.dump_policy ...`` is ``plora policy ...`` (no parser or logic here).

    python -m scripts.dump_policy --policy_file policy.json --allowed_targets_file assets/allowed_targets.txt
    python -m scripts.dump_policy --policy_file policy.json --tau_norm_z 4 --quorum 2

Prints the effective gate policy as JSON; target keywords (attention / mlp / all) are expanded to suffixes, so the
output is itself a valid policy file.
"""

from __future__ import annotations

from plora.cli.gate import policy_show, with_policy
from plora.cli.main import run_standalone


def main(argv: list[str] | None = None) -> None:
    run_standalone(with_policy(policy_show), argv, prog_name="python -m scripts.dump_policy")


if __name__ == "__main__":
    main()
