"""Clean reference statistics for the weight-anomaly check: per rank and module, a median and a robust scale.

    >>> from plora.plasmid import read_plasmid
    >>> from plora.gate.reference import build_reference
    >>> clean = [read_plasmid(d) for d in ("out/legal", "out/medical")]
    >>> ref = build_reference(clean, min_n=2)          # two clean plasmids here; a calibration has dozens
    >>> [key for key in sorted(ref.entries) if key.endswith("h.0.attn.c_attn")]   # by rank, and pooled
    ['*|transformer.h.0.attn.c_attn', 'r4|transformer.h.0.attn.c_attn']
    >>> sorted(ref.entries["r4|transformer.h.0.attn.c_attn"])
    ['erank', 'fro', 'max_abs', 'share', 'sv1']
    >>> ref.entries["r4|transformer.h.0.attn.c_attn"]["fro"]      # (median, robust scale)
    (0..., 0...)

Keys are ``r{rank}|{module}``, with the rank read from the tensors (rows of ``lora_A``), never from the manifest: an
attacker cannot move a plasmid into a laxer group by editing ``plora.yml``. A module's statistics depend on its rank
and on what it is (``transformer.h.0.attn.c_attn``), much less on which other modules were trained beside it, so a
reference built from rank-16 plasmids on all modules also covers a rank-16 attention-only plasmid. Each module also
gets a pooled key ``*|{module}`` over every rank, used where its rank has too few clean plasmids (a calibration
cohort rarely has three of every rank and target set; the pooled scale is wider, so the check is weaker there, but
it still scores). For every key and every statistic of :func:`plora.gate.weights.module_stats` the reference keeps
the median and the scaled median absolute deviation (1.4826 * MAD, the normal-consistent robust sigma) over CLEAN
plasmids. A key with fewer than ``min_n`` clean plasmids is left out, and a plasmid with a module that has neither key
is not scored (``SHAPE_UNCALIBRATED`` at the gate: fail closed). The reference lives inside the base's calibration file
(:mod:`plora.gate.calibration`); numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plora.plasmid import Plasmid

REFERENCE_VERSION = 3
# A robust sigma below this fraction of |median| is floored: a cohort where a statistic barely varies would otherwise
# turn float noise into huge z-scores.
MIN_RELATIVE_SCALE = 0.02
MAD_TO_SIGMA = 1.4826


def plasmid_rank(plasmid: Plasmid) -> int:
    ranks = {int(plasmid.pair(m)[0].shape[0]) for m in plasmid.modules()}
    return ranks.pop() if len(ranks) == 1 else -1


def module_key(rank: int, module: str) -> str:
    return f"r{rank}|{module}"


@dataclass
class WeightReference:
    entries: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # key -> stat -> (med, sigma)
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def keys_for(self, plasmid: Plasmid) -> list[str]:
        """Per module: its rank's key if the reference has it, else the pooled key (possibly absent too)."""
        rank = plasmid_rank(plasmid)
        keys = []
        for m in plasmid.modules():
            key = module_key(rank, m)
            keys.append(key if key in self.entries else f"*|{m}")
        return keys

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REFERENCE_VERSION,
            "entries": {k: {s: [round(v[0], 8), round(v[1], 8)] for s, v in st.items()}
                        for k, st in sorted(self.entries.items())},
            "counts": dict(sorted(self.counts.items())),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "") -> WeightReference:
        if obj.get("version") not in (2, REFERENCE_VERSION):  # version 2: the same, without pooled keys
            return cls(source=source)
        entries = {k: {s: (float(v[0]), float(v[1])) for s, v in st.items()} for k, st in obj["entries"].items()}
        return cls(entries, {k: int(v) for k, v in obj.get("counts", {}).items()}, source=source)


def check_reference_json(obj: Mapping[str, Any]) -> None:
    """ValueError naming the first thing in ``obj`` that is not a weight reference as :meth:`WeightReference.to_json`
    writes it (a version 2 or 3 object; per ``r{rank}|{module}`` or ``*|{module}`` key, per statistic, a finite
    median and a finite scale >= 0; counts >= 1)."""
    if set(obj) - {"version", "entries", "counts"}:
        raise ValueError(f"unknown weight reference field {sorted(set(obj) - {'version', 'entries', 'counts'})[0]!r}")
    if obj.get("version") not in (2, REFERENCE_VERSION) or isinstance(obj.get("version"), bool):
        raise ValueError(f"weight reference version must be 2 or {REFERENCE_VERSION}, found {obj.get('version')!r}")
    entries, counts = obj.get("entries"), obj.get("counts", {})
    if not isinstance(entries, dict) or not isinstance(counts, dict):
        raise ValueError("weight reference entries and counts must be objects")
    for key, stats in entries.items():
        rank, _, module = key.partition("|")
        if not module or not (rank == "*" or (rank[:1] == "r" and rank[1:].isdigit())) or not isinstance(stats, dict):
            raise ValueError(f"weight reference entry {key!r} is not r<rank>|<module> or *|<module> with statistics")
        for name, pair in stats.items():
            ok = isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) for x in pair)
            if not ok or pair[1] < 0:
                raise ValueError(f"weight reference {key} {name}: expected [median, scale >= 0], found {pair!r}")
    for key, n in counts.items():
        if key not in entries or not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"weight reference count {key!r}: {n!r} (expected a count >= 1 of an entry)")


def robust_location_scale(values: Iterable[float]) -> tuple[float, float]:
    """(median, 1.4826 * MAD), the scale floored at MIN_RELATIVE_SCALE * |median| (and 1e-12)."""
    x = np.asarray(list(values), dtype=np.float64)
    med = float(np.median(x))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(x - med)))
    return med, max(sigma, MIN_RELATIVE_SCALE * abs(med), 1e-12)


def build_reference(clean: Iterable[Plasmid], min_n: int = 3,
                    stats: Mapping[int, Mapping[str, Mapping[str, float]]] | None = None) -> WeightReference:
    """Reference from CLEAN plasmids only (``stats``: their precomputed module statistics, by position)."""
    from plora.gate.weights import plasmid_stats

    groups: dict[str, list[dict[str, float]]] = {}
    for i, p in enumerate(clean):
        rank = plasmid_rank(p)
        per_module = stats[i] if stats is not None else plasmid_stats(p)
        for module, st in per_module.items():
            groups.setdefault(module_key(rank, module), []).append(dict(st))
            groups.setdefault(f"*|{module}", []).append(dict(st))
    entries, counts = {}, {}
    for key, rows in sorted(groups.items()):
        if len(rows) >= min_n:
            entries[key] = {s: robust_location_scale(r[s] for r in rows) for s in rows[0]}
            counts[key] = len(rows)
    return WeightReference(entries, counts, source="built")
