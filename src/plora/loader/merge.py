"""Weighted merging of plasmids into a new plasmid, with the results of PEFT's ``add_weighted_adapter``.

    >>> from plora.loader import merge_plasmids
    >>> m = merge_plasmids(["out/legal", "out/medical"], [0.6, 0.4], out="out/merged")
    >>> m.merge.method, [(s.plasmid_id, s.weight) for s in m.merge.sources]
    ('linear', [('legal', 0.6), ('medical', 0.4)])
    >>> merge_plasmids(["out/legal", "out/medical"], [1, 1], method="ties", density=0.5, out="out/m2").lora.r
    4

Methods (as in PEFT 0.21 ``LoraModel.add_weighted_adapter``, whose results this module reproduces without needing the
base model; tests compare the merged deltas with PEFT's):

* ``linear``: A = sum sign(w s) sqrt|w s| A_i and B = sum sqrt|w s| B_i (s = alpha_i / r_i); needs equal ranks. This is
  *not* the weighted sum of the deltas B_i A_i (cross terms appear); ``cat`` and ``svd`` are exact / near exact.
* ``cat``: factors concatenated (rank = sum of ranks), so B A = sum w_i s_i B_i A_i exactly.
* ``svd``: the weighted sum of deltas, truncated to ``svd_rank`` (default: the largest source rank) by SVD.
* ``ties`` (magnitude prune to ``density``, sign election, disjoint mean), ``dare_linear`` / ``dare_ties`` (random
  drop with keep-probability ``density``, rescaled): applied to the A and B factors like ``linear``; needs equal ranks.

The merged plasmid has alpha = r (scale 1: the source scales are folded into the factors), the union of the sources'
targets, and ``manifest.merge`` records the method applied (``linear`` for a single source, as PEFT merges one adapter
linearly whatever was asked), its density (pruning methods only) and each source's plasmid_id, SHA-256 and weight.
Random methods draw from ``seed`` (torch's CPU generator, modules in natural name order, A before B: for GPT-2 that is
PEFT's order too, so a PEFT run after ``torch.manual_seed(seed)`` draws the same masks).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from plora.errors import LoaderError
from plora.loader.source import AdapterSource, read_adapter
from plora.manifest import LoraSpec, Manifest, Merge, Source, Training, now_utc

MERGE_METHODS = ("linear", "svd", "ties", "dare_linear", "dare_ties", "cat")
_SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties")
_PRUNING = ("ties", "dare_linear", "dare_ties")  # the methods that use density


def _natural_key(name: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _weighted_sum(tensors: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    stacked = torch.stack(tensors, dim=0)
    return (stacked * weights.view(weights.shape + (1,) * (stacked.dim() - 1))).sum(dim=0)


def _magnitude_prune(t: torch.Tensor, density: float) -> torch.Tensor:
    if density >= 1:
        return t
    mask = torch.zeros_like(t).reshape(-1)
    mask[torch.topk(t.abs().reshape(-1), k=int(density * t.numel()), largest=True)[1]] = 1
    return t * mask.reshape(t.shape)


def _random_prune(t: torch.Tensor, density: float) -> torch.Tensor:
    if density >= 1:
        return t
    return t * torch.bernoulli(torch.full_like(t, density)) / density


def _elect_and_merge(tensors: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    stacked = torch.stack(tensors, dim=0)
    sign = stacked.sign()
    majority = sign == torch.where(stacked.sum(dim=0) >= 0, 1, -1)
    weighted = stacked * weights.view(weights.shape + (1,) * (stacked.dim() - 1))
    return (weighted * majority).sum(dim=0) / torch.clamp(majority.sum(dim=0), min=1.0)


def _combine(method: str, tensors: list[torch.Tensor], weights: torch.Tensor, density: float | None) -> torch.Tensor:
    if method == "linear":
        return _weighted_sum(tensors, weights)
    if method == "ties":
        return _elect_and_merge([_magnitude_prune(t, density) for t in tensors], weights)
    if method == "dare_linear":
        return _weighted_sum([_random_prune(t, density) for t in tensors], weights)
    return _elect_and_merge([_random_prune(t, density) for t in tensors], weights)  # dare_ties


def _merge_module(
    method: str,
    parts: list[tuple[torch.Tensor, torch.Tensor, float, float]],
    new_rank: int,
    density: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of the merged adapter for one module; ``parts``: (A_i, B_i, scale_i, weight_i) of sources having it."""
    dtype = parts[0][0].dtype
    if method == "cat":
        a = torch.cat([a * w * s for a, _, s, w in parts], dim=0)
        b = torch.cat([b for _, b, _, _ in parts], dim=1)
        a_out = torch.zeros((new_rank, a.shape[1]), dtype=dtype)
        b_out = torch.zeros((b.shape[0], new_rank), dtype=dtype)
        a_out[: a.shape[0]] = a
        b_out[:, : b.shape[1]] = b
        return a_out, b_out
    if method == "svd":
        delta = _weighted_sum([(b @ a) * s for a, b, s, _ in parts], torch.tensor([w for *_, w in parts]))
        u, sv, vh = torch.linalg.svd(delta, full_matrices=False)
        return vh[:new_rank, :], u[:, :new_rank] @ torch.diag(sv[:new_rank])
    signed = [w * s for _, _, s, w in parts]
    w_a = torch.tensor([math.sqrt(abs(x)) * (1 if x >= 0 else -1) for x in signed])
    w_b = torch.tensor([math.sqrt(abs(x)) for x in signed])
    a = _combine(method, [p[0] for p in parts], w_a, density)
    b = _combine(method, [p[1] for p in parts], w_b, density)
    return a.to(dtype), b.to(dtype)


def _targets_config(configs: list[dict], targets: list[str]) -> list[str] | str:
    """adapter_config ``target_modules`` of the merge: PEFT's rule (regex strings joined, lists united)."""
    found = [c.get("target_modules") for c in configs]
    if all(isinstance(t, str) for t in found):
        return "|".join(f"({t})" for t in found)
    if all(isinstance(t, list) for t in found):
        return sorted({m for t in found for m in t})
    return sorted(targets)


def _check_sources(sources: list[AdapterSource], weights: Sequence[float], method: str, density: float | None) -> None:
    if method not in MERGE_METHODS:
        raise LoaderError(f"unknown merge method {method!r}; choose one of {', '.join(MERGE_METHODS)}")
    if not sources:
        raise LoaderError("merge needs at least one plasmid")
    if len(weights) != len(sources):
        raise LoaderError(f"{len(sources)} plasmids but {len(weights)} weights; give one weight per plasmid")
    if any(not math.isfinite(float(w)) for w in weights):
        raise LoaderError("merge weights must be finite numbers")
    for s in sources:
        if s.manifest is None:
            raise LoaderError(
                f"{s.folder}: merging needs plasmids with a plora.yml (raw PEFT folders have no base digest)"
            )
    first = sources[0].manifest
    for s in sources[1:]:
        if s.manifest.base_model.digest != first.base_model.digest:
            raise LoaderError(
                f"{s.label} was made for base {s.manifest.base_model.name!r} ({s.manifest.base_model.digest[:12]}...), "
                f"{sources[0].label} for {first.base_model.name!r} ({first.base_model.digest[:12]}...): cannot merge"
            )
    if method in _SAME_RANK and len(sources) > 1 and len({s.manifest.lora.r for s in sources}) != 1:
        ranks = ", ".join(f"{s.label}: r={s.manifest.lora.r}" for s in sources)
        raise LoaderError(f"{method} merging needs equal ranks ({ranks}); use method 'cat' or 'svd'")
    if method in _PRUNING and (density is None or not 0 < density <= 1):
        raise LoaderError(f"{method} merging needs a density in (0, 1], got {density}")


def merge_plasmids(
    folders: Sequence[str | os.PathLike[str]],
    weights: Sequence[float],
    method: str = "linear",
    out: str | os.PathLike[str] = "out/merged",
    *,
    density: float | None = None,
    seed: int = 0,
    svd_rank: int | None = None,
    plasmid_id: str | None = None,
    force: bool = False,
) -> Manifest:
    """Merge plasmids (same base model) with ``weights`` into a new plasmid folder ``out``; returns its manifest.

    An existing ``out`` holding only a plasmid's files is replaced; one holding anything else is refused unless
    ``force`` (:func:`plora.outputs.check_output_dir`: a source, the working directory or a file is never replaced).
    """
    from plora.outputs import check_output_dir
    from plora.plasmid import write_plasmid

    if svd_rank is not None and not (isinstance(svd_rank, int) and svd_rank >= 1):
        raise LoaderError(f"--svd-rank must be a positive integer, got {svd_rank}")
    if not 0 <= seed < 2**32:
        raise LoaderError(f"--seed must be in [0, 2**32), got {seed}")
    paths = [f for f in folders if isinstance(f, str | os.PathLike)]
    check_output_dir(out, sources=paths, force=force)  # never over a source, nor a user's files unless force
    sources = [read_adapter(f, verify=True) for f in folders]
    _check_sources(sources, weights, method, density)
    # PEFT merges a single adapter linearly whatever was asked
    effective = "linear" if len(sources) == 1 else method
    ranks = [s.manifest.lora.r for s in sources]
    if effective == "cat":
        new_rank = sum(ranks)
    elif effective == "svd":
        new_rank = svd_rank if svd_rank is not None else max(ranks)
    else:
        new_rank = ranks[0]
    modules = sorted({m for s in sources for m in s.modules}, key=_natural_key)
    tensors = {}
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in modules:
            parts = [
                (*s.modules[module], float(w)) for s, w in zip(sources, weights, strict=True) if module in s.modules
            ]
            if effective == "svd" and new_rank > min(parts[0][1].shape[0], parts[0][0].shape[1]):
                raise LoaderError(f"svd_rank {new_rank} exceeds the size of module {module!r}")
            a, b = _merge_module(effective, parts, new_rank, density)
            tensors[f"base_model.model.{module}.lora_A.weight"] = a.contiguous().numpy()
            tensors[f"base_model.model.{module}.lora_B.weight"] = b.contiguous().numpy()

    manifests = [s.manifest for s in sources]
    targets = sorted({t for m in manifests for t in m.lora.targets})
    configs = [dict(s.config) for s in sources]  # read (bounded) and parsed with the factors
    config = dict(configs[0])
    config.update(
        r=new_rank,
        lora_alpha=new_rank,
        target_modules=_targets_config(configs, targets),
        alpha_pattern={},
        rank_pattern={},
    )
    target_sets = {m.lora.target_set for m in manifests}
    domains = "+".join(dict.fromkeys(m.domain for m in manifests))
    out = Path(out)
    pid = plasmid_id or re.sub(r"[^A-Za-z0-9._-]", "-", out.name).lstrip("._-") or "merged"
    return write_plasmid(
        out,
        tensors,
        config,
        plasmid_id=pid,
        domain=domains if len(domains) <= 64 else "merged",
        created_at=now_utc(),
        base_model=manifests[0].base_model,
        lora=LoraSpec(
            r=new_rank,
            alpha=float(new_rank),
            dropout=manifests[0].lora.dropout,
            target_set=target_sets.pop() if len(target_sets) == 1 else "custom",
            targets=tuple(targets),
        ),
        training=Training(seed=seed, samples=0, epochs=0, dataset="merge"),
        merge=Merge(  # what was applied: one plasmid is merged linearly whatever method was asked, as PEFT does
            method=effective,
            sources=tuple(
                Source(plasmid_id=m.plasmid_id, sha256=m.artifact.sha256, weight=float(w))
                for m, w in zip(manifests, weights, strict=True)
            ),
            density=density if effective in _PRUNING else None,
        ),
    )
