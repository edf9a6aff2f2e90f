"""Weight-anomaly check: robust z-scores of per-module norms and spectra against clean plasmids of the same shape.

    >>> from plora.models import base_digest
    >>> from plora.plasmid import read_plasmid
    >>> from plora.gate.calibration import find_calibration
    >>> from plora.gate.weights import weight_anomaly
    >>> calibration = find_calibration(base_digest("plora-tiny"))
    >>> score = weight_anomaly(read_plasmid("out/legal"), calibration.weights())
    >>> score.max_z < calibration.thresholds.norm_z, score.details["worst"]     # worst module and statistic
    (True, 'transformer.h...')

Method. For every LoRA module the scaled update is ``delta = (alpha / r) * B @ A``. Its singular values come from the
r x r core ``R_B @ R_A^T`` of the QR factorisations ``B = Q_B R_B`` and ``A^T = Q_A R_A`` (exact, O((in + out) r^2),
no dense SVD). From them: Frobenius norm (``fro``), top singular value (``sv1``), largest entry (``max_abs``), spectral
share ``sv1^2 / sum s^2`` (``share``) and effective rank ``exp(H(s^2 / sum s^2))`` (``erank``). Each is turned into a
robust z-score ``(x - median) / (1.4826 MAD)`` against the clean reference for the plasmid's rank and module
(:mod:`plora.gate.reference`, from the base's calibration): magnitudes count only upwards (a backdoor adds
energy), the shape statistics both ways.
``max_z`` is the largest z over modules and statistics; it is nan when the reference lacks a module.

Measured on plora-tiny (see README, detection quality): a cheap pre-filter, not a detector on its own.
numpy only; about a millisecond per module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plora.gate.reference import WeightReference
from plora.plasmid import Plasmid

STATS = ("fro", "sv1", "max_abs", "share", "erank")
UPWARD_ONLY = frozenset({"fro", "sv1", "max_abs"})


@dataclass
class WeightScore:
    max_z: float
    details: dict[str, Any] = field(default_factory=dict)


def module_stats(a: np.ndarray, b: np.ndarray, scaling: float) -> dict[str, float]:
    """Statistics of ``scaling * b @ a`` for A (r, in) and B (out, r)."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    _, rb = np.linalg.qr(b64)
    _, ra = np.linalg.qr(a64.T)
    s = np.linalg.svd(rb @ ra.T, compute_uv=False) * abs(scaling)
    energy = float(np.sum(s**2))
    if energy <= 0.0 or not math.isfinite(energy):
        return {"fro": 0.0, "sv1": 0.0, "max_abs": 0.0, "share": 0.0, "erank": 0.0}
    p = s**2 / energy
    p = p[p > 0]
    max_abs = float(np.max(np.abs(b64 @ a64))) * abs(scaling)
    return {
        "fro": math.sqrt(energy),
        "sv1": float(s[0]),
        "max_abs": max_abs,
        "share": float(p[0]) if p.size else 0.0,
        "erank": float(math.exp(-np.sum(p * np.log(p)))),
    }


def plasmid_stats(plasmid: Plasmid) -> dict[str, dict[str, float]]:
    """``{module: {stat: value}}`` over every LoRA module of the plasmid."""
    scaling = plasmid.scaling
    return {m: module_stats(*plasmid.pair(m), scaling) for m in plasmid.modules()}


def weight_anomaly(plasmid: Plasmid, reference: WeightReference) -> WeightScore:
    """Largest robust z-score of the plasmid's module statistics against clean plasmids of its rank and modules.

    nan (with ``details["reason"]``) when the reference lacks any of the plasmid's modules at its rank.
    """
    stats = plasmid_stats(plasmid)
    keys = dict(zip(plasmid.modules(), reference.keys_for(plasmid), strict=True))
    total_fro = math.sqrt(sum(st["fro"] ** 2 for st in stats.values()))
    details: dict[str, Any] = {"modules": len(stats), "total_fro": total_fro}
    missing = sorted(k for k in keys.values() if k not in reference.entries)
    if missing:
        details["reason"] = f"no clean reference for {len(missing)} module(s) at this rank, e.g. {missing[0]}"
        return WeightScore(max_z=float("nan"), details=details)
    worst, max_z = "", -math.inf
    per_stat: dict[str, float] = {}
    for module, st in stats.items():
        entry = reference.entries[keys[module]]
        for name, value in st.items():
            med, sigma = entry[name]
            z = (value - med) / sigma
            z = z if name in UPWARD_ONLY else abs(z)
            if not math.isfinite(z):
                z = math.inf
            per_stat[name] = max(per_stat.get(name, -math.inf), z)
            if z > max_z:
                worst, max_z = f"{module}:{name}", z
    details.update(worst=worst, per_stat={k: round(v, 4) for k, v in per_stat.items()},
                   reference_n=min(reference.counts.get(k, 0) for k in keys.values()),
                   pooled_ranks=sum(k.startswith("*|") for k in keys.values()))
    return WeightScore(max_z=float(max_z), details=details)
