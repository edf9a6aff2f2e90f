"""Runtime: hot-load plasmids into a live model, exactly removable, and merge plasmids (the seed's ``plora.loader``).

    >>> from plora.models import load_base
    >>> from plora.loader import inject, remove, injected, merge_plasmids
    >>> base = load_base("plora-tiny")
    >>> before = {k: v.clone() for k, v in base.model.state_dict().items()}
    >>> h = inject(base, "out/legal", mode="side")             # or mode="merged"
    >>> remove(base, h)                                         # weights equal to before, bit for bit
    >>> all(base.model.state_dict()[k].equal(v) for k, v in before.items())
    True
    >>> m = merge_plasmids(["out/legal", "out/medical"], [0.6, 0.4], out="out/merged")
    >>> m.merge.method, m.lora.r
    ('linear', 4)

See :mod:`plora.loader.hotload` (modes, stacking, validation), :mod:`plora.loader.merge` (PEFT-equivalent weighted
merging) and :mod:`plora.loader.latency` (the PLORA_LATENCY_BUDGET_MS guard).
"""

from plora.loader.hotload import (
    InjectionHandle,
    active_injections,
    forget_digest,
    inject,
    injected,
    model_digest,
    release_buffers,
    remove,
    remove_all,
)
from plora.loader.latency import LatencyStats, check_latency_budget, enforce_latency_budget, measure_inject_remove
from plora.loader.merge import MERGE_METHODS, merge_plasmids
from plora.loader.source import AdapterSource, read_adapter

__all__ = [
    "MERGE_METHODS",
    "AdapterSource",
    "InjectionHandle",
    "LatencyStats",
    "active_injections",
    "check_latency_budget",
    "enforce_latency_budget",
    "forget_digest",
    "release_buffers",
    "inject",
    "injected",
    "measure_inject_remove",
    "merge_plasmids",
    "model_digest",
    "read_adapter",
    "remove",
    "remove_all",
]
