"""Paired statistics for per-example comparisons, from scipy and statsmodels.

    >>> import numpy as np
    >>> from plora.experiments.stats import paired_comparison, holm
    >>> base = np.array([2.0, 2.5, 3.1, 2.2, 2.9, 3.3])
    >>> trained = base - 0.5
    >>> s = paired_comparison(base, trained, seed=0)      # improvement = base - trained
    >>> round(s.mean_diff, 3)
    0.5

Conventions: ``paired_comparison(reference, candidate)`` looks at d = reference - candidate, so for a loss such as NLL a
positive d means the candidate is better. The test is the two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon;
zero differences dropped, Pratt's method is not used), the CI a paired percentile bootstrap of the mean difference
(scipy.stats.bootstrap over examples, resampling pairs), the effect sizes Cohen's d_z (mean / sd of d) and the
matched-pairs rank-biserial correlation. ``holm`` applies Holm's step-down correction (statsmodels.multipletests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests


@dataclass(frozen=True)
class PairedStats:
    n: int
    mean_diff: float
    median_diff: float
    ci_low: float
    ci_high: float
    wilcoxon_statistic: float
    p_value: float
    cohen_dz: float
    rank_biserial: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def ci_excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def _rank_biserial(d: np.ndarray) -> float:
    nz = d[d != 0]
    if nz.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(nz))
    pos, neg = ranks[nz > 0].sum(), ranks[nz < 0].sum()
    return float((pos - neg) / ranks.sum())


def paired_comparison(
    reference: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> PairedStats:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {ref.shape} and {cand.shape}")
    d = ref - cand
    n = int(d.size)
    if n == 0:
        raise ValueError("no paired examples")
    mean = float(d.mean())
    if np.all(d == 0):
        p, w = 1.0, 0.0
    else:
        res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        p, w = float(res.pvalue), float(res.statistic)
    if n > 1 and np.ptp(d) > 0:
        boot = stats.bootstrap(
            (d,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        lo, hi = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    else:
        lo = hi = mean
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    dz = mean / sd if sd > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    return PairedStats(
        n=n,
        mean_diff=mean,
        median_diff=float(np.median(d)),
        ci_low=lo,
        ci_high=hi,
        wilcoxon_statistic=w,
        p_value=p,
        cohen_dz=float(dz),
        rank_biserial=_rank_biserial(d),
    )


def significant(s: dict[str, Any] | None, alpha: float, margin: float = 0.0) -> bool:
    """A paired comparison (:func:`paired_test`'s fields plus ``p_holm``) that favours the candidate: mean above
    ``margin``, Holm p under ``alpha`` and the CI's lower end above 0."""
    return s is not None and s["mean_diff"] > margin and s["p_holm"] < alpha and s["ci_low"] > 0


def holm(p_values: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Holm-adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    return multipletests(p, alpha=alpha, method="holm")[1]
