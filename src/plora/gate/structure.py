"""Structural checks of a plasmid's tensors and adapter_config (numpy only): the gate's ``tensors`` stage.

    >>> from plora.gate.policy import load_policy
    >>> from plora.gate.structure import check_tensors
    >>> from plora.plasmid import read_plasmid
    >>> plasmid, policy = read_plasmid("out/legal"), load_policy("policy.json")
    >>> check_tensors(plasmid.tensors, plasmid.manifest, policy)
    []
    >>> m = plasmid.manifest                                               # a manifest that lies about the rank:
    >>> lying = m.model_copy(update={"lora": m.lora.model_copy(update={"r": 8})})
    >>> check_tensors(plasmid.tensors, lying, policy)
    [(<Reason.SHAPE_MISMATCH: 'SHAPE_MISMATCH'>, 'tensors have rank 4, manifest declares lora.r=8')]

The manifest is attacker-controlled: rank and targets are read from the factor shapes and the module names in
the safetensors keys, then compared with what ``plora.yml`` and ``adapter_config.json`` declare.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from plora.gate.policy import Policy
from plora.gate.reasons import Reason
from plora.gate.result import ReasonPair
from plora.manifest import Manifest
from plora.plasmid import config_beyond_plain_lora, parse_lora_key, suffix_match

LIST_MAX = 5


def clip(items: list[str]) -> str:
    more = f" (+{len(items) - LIST_MAX} more)" if len(items) > LIST_MAX else ""
    return ", ".join(items[:LIST_MAX]) + more


def check_tensors(
    tensors: dict[str, np.ndarray],
    m: Manifest,
    pol: Policy,
    base_shapes: dict[str, tuple[int, int]] | None = None,
    d: dict[str, Any] | None = None,
) -> list[ReasonPair]:
    """Rank and targets read from the tensors, checked against the manifest, the policy and (if known) the base's
    layer shapes ``{module: (in_features, out_features)}``."""
    d = {} if d is None else d
    out: list[ReasonPair] = []
    factors: dict[str, dict[str, list[np.ndarray]]] = {}
    stray, bad_dtype, nonfinite = [], [], []
    for key in sorted(tensors):
        arr = tensors[key]
        parsed = parse_lora_key(key)
        if parsed is None:
            stray.append(key)
            continue
        if not np.issubdtype(arr.dtype, np.floating) or arr.ndim != 2:
            bad_dtype.append(f"{key} {arr.dtype}{list(arr.shape)}")
            continue
        if not np.isfinite(arr).all():
            nonfinite.append(key)
        factors.setdefault(parsed[0], {"A": [], "B": []})[parsed[1]].append(arr)
    shape_errors: list[str] = []
    if stray:
        shape_errors.append(f"tensors that are not LoRA A/B factors: {clip(stray)}")
    if bad_dtype:
        shape_errors.append(f"LoRA factors must be 2-D floating point: {clip(bad_dtype)}")
    if nonfinite:
        out.append((Reason.TENSOR_NONFINITE, f"NaN or Inf in {clip(nonfinite)}"))
    if not factors:
        shape_errors.append("no LoRA factors in the artifact")
        return [(Reason.SHAPE_MISMATCH, "; ".join(shape_errors)), *out]
    ranks: set[int] = set()
    for module, ab in sorted(factors.items()):
        if len(ab["A"]) != 1 or len(ab["B"]) != 1:
            shape_errors.append(f"{module}: {len(ab['A'])} A and {len(ab['B'])} B factors (expected one each)")
            continue
        a, b = ab["A"][0], ab["B"][0]
        if a.shape[0] != b.shape[1]:
            shape_errors.append(f"{module}: A {list(a.shape)} and B {list(b.shape)} disagree on the rank")
            continue
        ranks.add(int(a.shape[0]))
        if base_shapes is not None:
            want = base_shapes.get(module)
            if want is None:
                shape_errors.append(f"{module}: no such layer in base {pol.base_model}")
            elif (int(a.shape[1]), int(b.shape[0])) != want:
                shape_errors.append(
                    f"{module}: LoRA maps {a.shape[1]}->{b.shape[0]}, base layer is {want[0]}->{want[1]}"
                )
    if len(ranks) > 1:
        shape_errors.append(f"modules disagree on the rank: {sorted(ranks)}")
    elif ranks and ranks != {m.lora.r}:
        shape_errors.append(f"tensors have rank {min(ranks)}, manifest declares lora.r={m.lora.r}")
    modules = sorted(factors)
    undeclared = [x for x in modules if not any(suffix_match(x, t) for t in m.lora.targets)]
    unused = [t for t in m.lora.targets if not any(suffix_match(x, t) for x in modules)]
    if undeclared:
        shape_errors.append(f"modules outside the declared targets {list(m.lora.targets)}: {clip(undeclared)}")
    if unused:
        shape_errors.append(f"declared targets with no tensors: {clip(unused)}")
    if shape_errors:
        out.append((Reason.SHAPE_MISMATCH, "; ".join(shape_errors[:LIST_MAX])))
    found_ranks = sorted(ranks | {m.lora.r})
    not_allowed_ranks = [r for r in found_ranks if r not in pol.allowed_ranks]
    if not_allowed_ranks:
        out.append((Reason.RANK_NOT_ALLOWED, f"rank {not_allowed_ranks} not in allowed ranks {pol.allowed_ranks}"))
    suffixes = pol.target_suffixes()
    bad_targets = [x for x in modules if not pol.target_allowed(x)]
    if bad_targets:
        out.append((Reason.TARGETS_NOT_ALLOWED, f"{clip(bad_targets)} not in allowed targets {list(suffixes)}"))
    d.update(rank=sorted(ranks), modules=len(modules), base_shapes_checked=base_shapes is not None)
    return out


def config_disagreements(cfg: dict[str, Any], m: Manifest) -> list[str]:
    """PEFT settings that change what the tensors do must agree with the manifest the gate checked."""
    out: list[str] = []
    if cfg.get("peft_type", "LORA") != "LORA":
        out.append(f"peft_type {cfg.get('peft_type')!r} is not LORA")
    if cfg.get("r") != m.lora.r:
        out.append(f"r={cfg.get('r')!r} vs lora.r={m.lora.r}")
    alpha = cfg.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or float(alpha) != m.lora.alpha:
        out.append(f"lora_alpha={alpha!r} vs lora.alpha={m.lora.alpha}")
    targets = cfg.get("target_modules")
    if not isinstance(targets, list) or sorted(set(map(str, targets))) != sorted(m.lora.targets):
        out.append(f"target_modules={targets!r} vs lora.targets={list(m.lora.targets)}")
    out.extend(config_beyond_plain_lora(cfg))
    return out


def base_module_shapes(base: Any) -> dict[str, tuple[int, int]] | None:
    """(in_features, out_features) of every 2-D linear layer of a loaded base; None without a base."""
    model = getattr(base, "model", None)
    if model is None or not hasattr(model, "named_modules"):
        return None
    shapes: dict[str, tuple[int, int]] = {}
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if w is None or getattr(w, "ndim", 0) != 2:
            continue
        if type(mod).__name__ == "Conv1D":  # GPT-2 stores (in, out)
            shapes[name] = (int(w.shape[0]), int(w.shape[1]))
        elif hasattr(mod, "in_features") and hasattr(mod, "out_features"):
            shapes[name] = (int(mod.in_features), int(mod.out_features))
    return shapes


def config_module_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]] | None:
    """Layer shapes of a GPT-2 or Llama-family base from its config.json alone (no weights, no torch)."""
    kind = config.get("model_type")
    shapes: dict[str, tuple[int, int]] = {}
    try:
        if kind == "gpt2":
            d, inner = int(config["n_embd"]), int(config.get("n_inner") or 4 * config["n_embd"])
            for i in range(int(config["n_layer"])):
                p = f"transformer.h.{i}"
                shapes.update({f"{p}.attn.c_attn": (d, 3 * d), f"{p}.attn.c_proj": (d, d)})
                shapes.update({f"{p}.mlp.c_fc": (d, inner), f"{p}.mlp.c_proj": (inner, d)})
            return shapes
        if kind in {"llama", "mistral", "qwen2"}:
            h, inter = int(config["hidden_size"]), int(config["intermediate_size"])
            heads = int(config["num_attention_heads"])
            kv = int(config.get("num_key_value_heads") or heads)
            hd = int(config.get("head_dim") or h // heads)
            for i in range(int(config["num_hidden_layers"])):
                a, f = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
                shapes.update(
                    {f"{a}.q_proj": (h, heads * hd), f"{a}.k_proj": (h, kv * hd), f"{a}.v_proj": (h, kv * hd)}
                )
                shapes.update(
                    {f"{a}.o_proj": (heads * hd, h), f"{f}.gate_proj": (h, inter), f"{f}.up_proj": (h, inter)}
                )
                shapes[f"{f}.down_proj"] = (inter, h)
            return shapes
    except (KeyError, TypeError, ValueError):
        return None
    return None


@functools.lru_cache(maxsize=16)
def config_file_shapes(base_model: str) -> dict[str, tuple[int, int]] | None:
    """Layer shapes from the base's config.json when it is on disk already (plora-tiny or a local folder)."""
    folder = Path(base_model)
    if not folder.is_dir():
        if base_model != "plora-tiny":
            return None  # other named bases may need a download or a conversion: not in a cheap stage
        try:
            from plora.models import tiny_folder
        except ImportError:
            return None
        folder = tiny_folder()
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config_module_shapes(config) if isinstance(config, dict) else None
