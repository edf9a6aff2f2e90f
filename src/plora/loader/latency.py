"""Inject+remove latency, and the budget (PLORA_LATENCY_BUDGET_MS) that callers such as the value-add run enforce.

    >>> from plora.models import load_base
    >>> from plora.loader import measure_inject_remove, check_latency_budget, enforce_latency_budget
    >>> base = load_base("plora-tiny")
    >>> stats = measure_inject_remove(base, "out/legal", mode="merged", repeats=5)
    >>> stats.repeats, stats.min_ms <= stats.median_ms <= stats.max_ms
    (5, True)
    >>> check_latency_budget(stats.median_ms)       # the budget in force; LoaderError if over it
    250.0
    >>> stats = enforce_latency_budget(base, "out/legal", mode="merged", repeats=5)   # both in one call

Each repeat reads the plasmid from disk, injects it and removes it, so the figure is what a serving agent pays to
hot-swap one plasmid.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from plora.errors import LoaderError


@dataclass(frozen=True)
class LatencyStats:
    mode: str
    repeats: int
    median_ms: float
    mean_ms: float
    min_ms: float
    p90_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(mode: str, samples_ms: list[float]) -> LatencyStats:
    s = sorted(samples_ms)
    return LatencyStats(
        mode=mode,
        repeats=len(s),
        median_ms=statistics.median(s),
        mean_ms=statistics.fmean(s),
        min_ms=s[0],
        p90_ms=s[min(len(s) - 1, int(0.9 * len(s)))],
        max_ms=s[-1],
    )


def measure_inject_remove(
    model: Any, plasmid: Any, mode: str = "side", repeats: int = 50, warmup: int = 3, **inject_kwargs: Any
) -> LatencyStats:
    """Time ``repeats`` rounds of inject (file read included when ``plasmid`` is a path) + remove, in ms."""
    from plora.loader.hotload import inject, remove

    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise LoaderError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise LoaderError(f"warmup must be an integer >= 0, got {warmup!r}")
    samples = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        handle = inject(model, plasmid, mode=mode, **inject_kwargs)
        remove(model, handle)
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
    return summarize(mode, samples)


def check_latency_budget(ms: float, budget_ms: float | None = None, what: str = "inject+remove") -> float:
    """Return the budget in force; raise LoaderError when ``ms`` exceeds it (default PLORA_LATENCY_BUDGET_MS)."""
    if budget_ms is None:
        from plora.settings import get_settings

        budget_ms = get_settings().latency_budget_ms
    elif not (math.isfinite(budget_ms) and budget_ms > 0):  # a NaN budget would never be exceeded
        raise LoaderError(f"budget_ms must be a positive number of milliseconds, got {budget_ms}")
    if ms > budget_ms:
        raise LoaderError(
            f"{what} took {ms:.2f} ms, over the latency budget of {budget_ms:g} ms "
            "(PLORA_LATENCY_BUDGET_MS; raise it or use mode='side')"
        )
    return budget_ms


def enforce_latency_budget(
    model: Any, plasmid: Any, mode: str = "merged", repeats: int = 20, budget_ms: float | None = None, **kwargs: Any
) -> LatencyStats:
    """Measure inject+remove (median of ``repeats``) and raise LoaderError if it is over the budget."""
    stats = measure_inject_remove(model, plasmid, mode=mode, repeats=repeats, **kwargs)
    check_latency_budget(stats.median_ms, budget_ms, what=f"{mode}-mode inject+remove (median of {repeats})")
    return stats
