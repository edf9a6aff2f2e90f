"""Detection metrics for gate-eval: AUROC, rates with Wilson intervals, ROC curves, threshold rules.

    >>> from plora.experiments.gate_eval.metrics import auroc, wilson, rates
    >>> auroc([0.9, 0.8], [0.1, 0.85])
    0.75
    >>> [round(x, 3) for x in wilson(0, 16)]
    [0.0, 0.194]
    >>> rates([0.9, 0.2], [0.1], 0.5)["tp"]
    1

AUROC is the Mann-Whitney U statistic over (positives x negatives) pairs (scipy), ties counted half; a nan score
(a detector that could not score) counts as -inf, i.e. it never flags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U / (n_pos n_neg)); nan -> -inf."""
    from scipy.stats import mannwhitneyu

    p, n = _finite(pos), _finite(neg)
    if not len(p) or not len(n):
        return float("nan")
    if np.all(p == p[0]) and np.all(n == p[0]):
        return 0.5
    return float(mannwhitneyu(p, n, alternative="two-sided").statistic / (len(p) * len(n)))


def _finite(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return np.where(np.isnan(a), -np.inf, a)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (95% by default); (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def rates(pos: Sequence[float], neg: Sequence[float], tau: float) -> dict[str, Any]:
    """TPR and FPR of the rule ``score > tau`` (nan scores never flag), with Wilson intervals."""
    p, n = _finite(pos), _finite(neg)
    tp, fp = int(np.sum(p > tau)), int(np.sum(n > tau))
    return {
        "tpr": tp / len(p) if len(p) else float("nan"), "tpr_ci95": wilson(tp, len(p)), "tp": tp, "n_pos": len(p),
        "fpr": fp / len(n) if len(n) else float("nan"), "fpr_ci95": wilson(fp, len(n)), "fp": fp, "n_neg": len(n),
    }


def roc_curve(pos: Sequence[float], neg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1)."""
    p, n = _finite(pos), _finite(neg)
    if not len(p) or not len(n):
        return np.asarray([0.0, 1.0]), np.asarray([0.0, 1.0]) if len(p) else np.asarray([0.0, 0.0])
    thresholds = np.unique(np.concatenate([p, n]))[::-1]
    fpr = [0.0] + [float(np.mean(n >= t)) for t in thresholds]
    tpr = [0.0] + [float(np.mean(p >= t)) for t in thresholds]
    return np.asarray(fpr + [1.0]), np.asarray(tpr + [1.0])


def tpr_at_fpr(pos: Sequence[float], neg: Sequence[float], max_fpr: float = 0.05) -> float:
    fpr, tpr = roc_curve(pos, neg)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def calibrate(scores: Sequence[float], margin: float) -> float:
    """Threshold from clean calibration scores: max + margin * (max - median)."""
    x = np.asarray([s for s in scores if math.isfinite(s)], dtype=np.float64)
    if not len(x):
        return float("inf")
    top, med = float(x.max()), float(np.median(x))
    return top + margin * max(top - med, 0.0)
