"""The security gate: policy, ordered checks with stable reason codes, weight anomaly and behavioural probes.

    >>> from plora.gate import load_policy, screen
    >>> result = screen("out/legal", load_policy("policy.json", "assets/allowed_targets.txt"))
    >>> result.accepted, result.reason_codes
    (True, [])
    >>> [(c.name, c.passed) for c in result.checks]        # None: a stage the policy turns off (signatures here)
    [('schema', True), ('base_model', True), ('artifact', True), ('tensors', True), ('integrity', True),
     ('signatures', None), ('calibration', True), ('weights', True), ('probes', True)]

The detectors (``plora.gate.weights``, ``plora.gate.probes``) import torch only when they run.
"""

from plora.gate.policy import Policy, PolicyError, load_policy
from plora.gate.reasons import Reason
from plora.gate.screen import CheckRecord, GateResult, screen

__all__ = ["CheckRecord", "GateResult", "Policy", "PolicyError", "Reason", "load_policy", "screen"]
