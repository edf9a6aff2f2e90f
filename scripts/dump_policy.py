"""Seed shim: print the effective gate policy as JSON (same code as `plora gate`'s policy loading).

    python -m scripts.dump_policy --policy_file policy.json --allowed_targets_file assets/allowed_targets.txt
    python -m scripts.dump_policy --policy_file policy.json --tau_norm_z 4 --quorum 2

The output is itself a valid policy file: target keywords (attention / mlp / all) are expanded to suffixes.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.dump_policy", description=__doc__.splitlines()[0])
    ap.add_argument("--policy_file", "--policy-file")
    ap.add_argument("--allowed_targets_file", "--allowed-targets-file")
    ap.add_argument("--allowed_targets", help="attention | mlp | all | suffix,suffix")
    ap.add_argument("--allowed_ranks", help="e.g. 4,8,16")
    ap.add_argument("--tau_trigger", type=float)
    ap.add_argument("--tau_norm_z", type=float)
    ap.add_argument("--tau_clean_delta", type=float)
    ap.add_argument("--signatures", choices=["on", "off"])
    ap.add_argument("--trusted_keys", "--trusted_pubkeys", help="comma-separated public keys or folders")
    ap.add_argument("--quorum", type=int)
    args = vars(ap.parse_args(argv))

    from plora.errors import PloraError
    from plora.gate.policy import load_policy

    try:
        policy = load_policy(args.pop("policy_file"), args.pop("allowed_targets_file"), **args)
    except PloraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(policy.effective().model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
