"""Clean reference statistics for the weight-anomaly check: per shape, per module, median and robust scale.

    >>> from plora.gate.reference import build_reference, save_reference, load_reference
    >>> ref = build_reference([read_plasmid(d) for d in clean_dirs])        # doctest: +SKIP
    >>> save_reference(ref)                                                 # doctest: +SKIP
    >>> load_reference().entry_for(read_plasmid("out/legal"))               # doctest: +SKIP

A *shape* is (base model name, rank, target suffixes), read from the tensors (rank from ``lora_A``, targets from the
module names), not from the manifest: an attacker cannot move a plasmid into a laxer cohort by editing ``plora.yml``.
For every module and every statistic of :func:`plora.gate.weights.module_stats` the reference keeps the median and the
scaled median absolute deviation (1.4826 * MAD, the normal-consistent robust sigma) over a cohort of CLEAN plasmids.

Lookup order: a reference built by ``plora gate-eval`` and cached under ``PLORA_HOME/gate/weight_reference.json``
overrides, shape by shape, the one shipped in ``plora/assets/gate/weight_reference.json``. The file is small JSON,
read with numpy only (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plora.fsio import atomic_write_json
from plora.plasmid import Plasmid

REFERENCE_VERSION = 1
REFERENCE_NAME = "weight_reference.json"
SHIPPED_REFERENCE = Path(__file__).resolve().parent.parent / "assets" / "gate" / REFERENCE_NAME
# A robust sigma below this fraction of |median| is floored: a cohort where a statistic barely varies would otherwise
# turn float noise into huge z-scores.
MIN_RELATIVE_SCALE = 0.02
MAD_TO_SIGMA = 1.4826


def module_suffix(module: str) -> str:
    """``transformer.h.0.attn.c_attn`` -> ``attn.c_attn`` (the part that names what the module is, not which layer)."""
    parts = module.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 2 else module


def shape_key(plasmid: Plasmid) -> str:
    """``plora-tiny|r4|attn.c_attn`` from the tensors themselves (rank = rows of lora_A, targets = module suffixes)."""
    modules = plasmid.modules()
    ranks = sorted({int(plasmid.pair(m)[0].shape[0]) for m in modules})
    rank = "+".join(str(r) for r in ranks) or "0"
    targets = ",".join(sorted({module_suffix(m) for m in modules}))
    return f"{plasmid.manifest.base_model.name}|r{rank}|{targets}"


@dataclass
class ShapeReference:
    """Robust location/scale per module and statistic, from ``n`` clean plasmids of one shape."""

    n: int
    base_digest: str
    modules: dict[str, dict[str, tuple[float, float]]]  # module -> stat -> (median, sigma)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "base_digest": self.base_digest,
            "modules": {
                m: {s: [round(v[0], 8), round(v[1], 8)] for s, v in st.items()} for m, st in self.modules.items()
            },
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ShapeReference:
        mods = {m: {s: (float(v[0]), float(v[1])) for s, v in st.items()} for m, st in obj["modules"].items()}
        return cls(n=int(obj["n"]), base_digest=str(obj.get("base_digest", "")), modules=mods)


@dataclass
class WeightReference:
    shapes: dict[str, ShapeReference] = field(default_factory=dict)
    source: str = ""

    def entry_for(self, plasmid: Plasmid) -> ShapeReference | None:
        return self.shapes.get(shape_key(plasmid))

    def merged(self, other: WeightReference) -> WeightReference:
        """Shapes of ``other`` override those of ``self``."""
        return WeightReference({**self.shapes, **other.shapes}, source=f"{self.source}+{other.source}".strip("+"))

    def to_json(self) -> dict[str, Any]:
        return {"version": REFERENCE_VERSION, "shapes": {k: v.to_json() for k, v in sorted(self.shapes.items())}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "") -> WeightReference:
        if obj.get("version") != REFERENCE_VERSION:
            return cls(source=source)
        return cls({k: ShapeReference.from_json(v) for k, v in obj.get("shapes", {}).items()}, source=source)


def robust_location_scale(values: Iterable[float]) -> tuple[float, float]:
    """(median, 1.4826 * MAD), the scale floored at MIN_RELATIVE_SCALE * |median| (and 1e-12)."""
    x = np.asarray(list(values), dtype=np.float64)
    med = float(np.median(x))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(x - med)))
    return med, max(sigma, MIN_RELATIVE_SCALE * abs(med), 1e-12)


def build_reference(clean: Iterable[Plasmid], min_per_shape: int = 3) -> WeightReference:
    """Reference from CLEAN plasmids only; shapes with fewer than ``min_per_shape`` members are left out."""
    from plora.gate.weights import plasmid_stats

    groups: dict[str, list[Plasmid]] = {}
    for p in clean:
        groups.setdefault(shape_key(p), []).append(p)
    shapes: dict[str, ShapeReference] = {}
    for key, members in groups.items():
        if len(members) < min_per_shape:
            continue
        stats = [plasmid_stats(p) for p in members]
        common = set(stats[0]).intersection(*stats[1:])
        modules = {
            m: {s: robust_location_scale(st[m][s] for st in stats) for s in stats[0][m]} for m in sorted(common)
        }
        shapes[key] = ShapeReference(n=len(members), base_digest=members[0].manifest.base_model.digest, modules=modules)
    return WeightReference(shapes, source="built")


def cached_reference_path() -> Path:
    from plora.settings import cache_dir

    return cache_dir("gate") / REFERENCE_NAME


def read_reference_file(path: str | Path) -> WeightReference:
    path = Path(path)
    try:
        return WeightReference.from_json(json.loads(path.read_text(encoding="utf-8")), source=str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return WeightReference(source=str(path))


def save_reference(ref: WeightReference, path: str | Path | None = None) -> Path:
    """Write ``ref`` as JSON (default: the PLORA_HOME cache, which overrides the shipped reference)."""
    return atomic_write_json(Path(path) if path else cached_reference_path(), ref.to_json())


def load_reference() -> WeightReference:
    """The shipped reference, overridden shape by shape by the one ``plora gate-eval`` cached under PLORA_HOME."""
    shipped = read_reference_file(SHIPPED_REFERENCE) if SHIPPED_REFERENCE.exists() else WeightReference()
    cached = cached_reference_path()
    return shipped.merged(read_reference_file(cached)) if cached.exists() else shipped
