"""The security gate: policy, ordered checks with stable reason codes, weight anomaly and behavioural probes.

    >>> from plora.gate import load_policy, screen
    >>> result = screen("out/legal", load_policy("policy.json", "assets/allowed_targets.txt"))  # doctest: +SKIP
    >>> result.accepted, result.reason_codes                                                  # doctest: +SKIP
    (True, [])

The detectors (``plora.gate.weights``, ``plora.gate.probes``) import torch only when they run.
"""

from plora.gate.policy import Policy, PolicyError, load_policy
from plora.gate.reasons import Reason
from plora.gate.screen import CheckRecord, GateResult, screen

__all__ = ["CheckRecord", "GateResult", "Policy", "PolicyError", "Reason", "load_policy", "screen"]
