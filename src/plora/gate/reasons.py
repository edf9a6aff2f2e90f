"""Stable reason codes for gate and verify failures (strings: safe to store, compare and count).

    >>> from plora.gate.reasons import Reason, STAGE_OF
    >>> Reason.RANK_NOT_ALLOWED.value, STAGE_OF[Reason.RANK_NOT_ALLOWED]
    ('RANK_NOT_ALLOWED', 'tensors')

The values never change once released; new codes are only ever added. ``plora.signer`` returns the same
strings (it sits below the gate and does not import this module).
"""

from __future__ import annotations

from enum import StrEnum

# Raised whenever a release makes a gate stage refuse something it used to accept (2: adapter_config.json is plain
# LoRA by allowlist). Part of the swarm's verdict-cache key, so no verdict made under older rules is reused.
RULES_VERSION = 2


class Reason(StrEnum):
    MANIFEST_MISSING = "MANIFEST_MISSING"
    SCHEMA_INVALID = "SCHEMA_INVALID"
    UNSAFE_FILE = "UNSAFE_FILE"
    BASE_MODEL_MISMATCH = "BASE_MODEL_MISMATCH"
    ARTIFACT_TOO_LARGE = "ARTIFACT_TOO_LARGE"
    ARTIFACT_UNREADABLE = "ARTIFACT_UNREADABLE"
    RANK_NOT_ALLOWED = "RANK_NOT_ALLOWED"
    TARGETS_NOT_ALLOWED = "TARGETS_NOT_ALLOWED"
    SHAPE_MISMATCH = "SHAPE_MISMATCH"
    TENSOR_NONFINITE = "TENSOR_NONFINITE"
    ARTIFACT_SHA_MISMATCH = "ARTIFACT_SHA_MISMATCH"
    CONFIG_SHA_MISMATCH = "CONFIG_SHA_MISMATCH"
    SIGNATURE_MISSING = "SIGNATURE_MISSING"
    SIGNATURE_LEGACY = "SIGNATURE_LEGACY"
    ENVELOPE_INVALID = "ENVELOPE_INVALID"
    PAYLOAD_TYPE_MISMATCH = "PAYLOAD_TYPE_MISMATCH"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    SIGNER_UNTRUSTED = "SIGNER_UNTRUSTED"
    QUORUM_NOT_MET = "QUORUM_NOT_MET"
    BASE_UNCALIBRATED = "BASE_UNCALIBRATED"
    SHAPE_UNCALIBRATED = "SHAPE_UNCALIBRATED"
    WEIGHT_ANOMALY = "WEIGHT_ANOMALY"
    TRIGGER_SUSPECT = "TRIGGER_SUSPECT"
    CLEAN_DEGRADED = "CLEAN_DEGRADED"


# The gate's stages in the order they run; each code belongs to exactly one stage.
STAGES: tuple[str, ...] = (
    "schema",
    "base_model",
    "artifact",
    "tensors",
    "integrity",
    "signatures",
    "calibration",
    "weights",
    "probes",
)

STAGE_OF: dict[Reason, str] = {
    Reason.MANIFEST_MISSING: "schema",
    Reason.SCHEMA_INVALID: "schema",
    Reason.UNSAFE_FILE: "schema",
    Reason.BASE_MODEL_MISMATCH: "base_model",
    Reason.ARTIFACT_TOO_LARGE: "artifact",
    Reason.ARTIFACT_UNREADABLE: "artifact",
    Reason.RANK_NOT_ALLOWED: "tensors",
    Reason.TARGETS_NOT_ALLOWED: "tensors",
    Reason.SHAPE_MISMATCH: "tensors",
    Reason.TENSOR_NONFINITE: "tensors",
    Reason.ARTIFACT_SHA_MISMATCH: "integrity",
    Reason.CONFIG_SHA_MISMATCH: "integrity",
    Reason.SIGNATURE_MISSING: "signatures",
    Reason.SIGNATURE_LEGACY: "signatures",
    Reason.ENVELOPE_INVALID: "signatures",
    Reason.PAYLOAD_TYPE_MISMATCH: "signatures",
    Reason.SIGNATURE_INVALID: "signatures",
    Reason.SIGNER_UNTRUSTED: "signatures",
    Reason.QUORUM_NOT_MET: "signatures",
    Reason.BASE_UNCALIBRATED: "calibration",
    Reason.SHAPE_UNCALIBRATED: "weights",
    Reason.WEIGHT_ANOMALY: "weights",
    Reason.TRIGGER_SUSPECT: "probes",
    Reason.CLEAN_DEGRADED: "probes",
}

DESCRIPTION: dict[Reason, str] = {
    Reason.MANIFEST_MISSING: "no plora.yml in the folder (or no folder)",
    Reason.SCHEMA_INVALID: "plora.yml or adapter_config.json malformed: syntax, unknown field, wrong type or range",
    Reason.UNSAFE_FILE: "a pickle-format file (.bin .pt .pth .pkl .ckpt), a symlink, a FIFO, socket or device, or a "
                        ".safetensors file plora.yml does not name in the plasmid folder",
    Reason.BASE_MODEL_MISMATCH: "manifest base model name or weights digest differs from the policy's",
    Reason.ARTIFACT_TOO_LARGE: "artifact file larger than max_artifact_bytes (checked before reading it)",
    Reason.ARTIFACT_UNREADABLE: "artifact missing, truncated, or not safetensors",
    Reason.RANK_NOT_ALLOWED: "rank read from the tensors (or declared) not in allowed_ranks",
    Reason.TARGETS_NOT_ALLOWED: "a module in the tensors is not an allowed target",
    Reason.SHAPE_MISMATCH: "tensors contradict the manifest's rank/targets, A/B shapes inconsistent, stray keys",
    Reason.TENSOR_NONFINITE: "NaN or Inf in a tensor",
    Reason.ARTIFACT_SHA_MISMATCH: "artifact size or SHA-256 differs from the manifest",
    Reason.CONFIG_SHA_MISMATCH: "adapter_config.json hash differs, or its r/alpha/targets disagree with the manifest",
    Reason.SIGNATURE_MISSING: "signatures required, no plora.sig.json (or model.sig) beside the manifest",
    Reason.SIGNATURE_LEGACY: "only old-format signatures (inside plora.yml, no payload type): run plora sign again",
    Reason.ENVELOPE_INVALID: "plora.sig.json or model.sig malformed: syntax, unknown field, bad base64, too large",
    Reason.PAYLOAD_TYPE_MISMATCH: "the envelope holds another kind of signed record than a plasmid manifest",
    Reason.SIGNATURE_INVALID: "a signature by a trusted key does not verify, or the envelope signs another manifest",
    Reason.SIGNER_UNTRUSTED: "a signature by a key outside the keyring (fails only if the quorum is not met)",
    Reason.QUORUM_NOT_MET: "fewer distinct trusted signers than the quorum (a repeated signer counts once)",
    Reason.BASE_UNCALIBRATED: "no usable gate calibration for the base's weights digest (none: policy "
                              "uncalibrated_base=refuse; unreadable; or, probes on, made for another probe version)",
    Reason.SHAPE_UNCALIBRATED: "the base's calibration has no clean weight reference for this plasmid's shape",
    Reason.WEIGHT_ANOMALY: "max robust z of weight statistics above tau_norm_z (or the detector failed: fail closed)",
    Reason.TRIGGER_SUSPECT: "behavioural trigger score above tau_trigger (or the probe failed: fail closed)",
    Reason.CLEAN_DEGRADED: "clean-probe degradation against the base above tau_clean_delta",
}


def markdown_table() -> str:
    """The reason-code table of the README."""
    rows = ["| code | stage | meaning |", "|---|---|---|"]
    rows += [f"| `{r.value}` | {STAGE_OF[r]} | {DESCRIPTION[r]} |" for r in Reason]
    return "\n".join(rows)
