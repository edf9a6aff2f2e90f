"""Resolve and load base models: ``plora-tiny``, ``smollm2-135m``, a local folder or a hub id.

    >>> from plora.models import load_base, base_digest, target_modules
    >>> base = load_base()                        # --base-model / PLORA_BASE_MODEL / plora-tiny
    >>> base.name, base.digest == base_digest("plora-tiny")
    ('plora-tiny', True)
    >>> target_modules("plora-tiny", "attention")
    ['attn.c_attn', 'attn.c_proj']

Every :func:`load_base` call returns a NEW model (callers inject adapters into its weights); only disk work is
shared: the GGUF conversion is cached under PLORA_HOME, tokenizers are memoised per folder, and digests are read
from ``build.json`` (plora-tiny), the conversion marker (smollm2-135m) or a digest cache keyed by a folder's path,
file sizes and modification times (other folders), so :func:`base_digest` does not import torch when it can help it.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plora.errors import ModelError, PloraError
from plora.fsio import atomic_write_json, file_lock
from plora.settings import cache_dir, choose_base_model, get_settings

TINY = "plora-tiny"
SMOLLM2 = "smollm2-135m"
BUILTIN = (TINY, SMOLLM2)
TARGET_SETS = ("attention", "mlp", "all")
OFFLINE_HINT = "point PLORA_BASE_MODEL (or --base-model) at a local model folder, or use plora-tiny / smollm2-135m"

# PEFT matches each entry as a module-name suffix (``name == key`` or ``name.endswith("." + key)``). GPT-2's
# attention covers the fused q/k/v projection and the output projection, like q/k/v/o on Llama, so "attention"
# means the same thing on both families; the "attn." / "mlp." prefixes keep GPT-2's two c_proj apart.
_GPT2 = {"attention": ["attn.c_attn", "attn.c_proj"], "mlp": ["mlp.c_fc", "mlp.c_proj"]}
_LLAMA = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"]}
_FAMILIES: dict[str, dict[str, list[str]]] = {
    "gpt2": _GPT2,
    **{t: _LLAMA for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2")},
}


@dataclass
class LoadedBase:
    """A base model ready to use: eval mode, float32, on CPU; the tokenizer pads with EOS on the right."""

    name: str
    model: Any
    tokenizer: Any
    digest: str


def tiny_folder() -> Path:
    """The shipped ``plora-tiny`` folder (built by ``plora base build``)."""
    return Path(__file__).resolve().parent.parent / "assets" / TINY


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or (os.sep != "/" and os.sep in name)


def canonical_name(name: str | None) -> str:
    """``plora-tiny``, ``smollm2-135m``, the absolute path of a local folder, or a hub id (after option/env choice)."""
    chosen = choose_base_model(name)
    if chosen.lower() in BUILTIN:
        return chosen.lower()
    path = Path(chosen).expanduser()
    if path.is_dir():
        adapter = [n for n in ("plora.yml", "adapter_config.json") if (path / n).exists()]
        if adapter:  # transformers would follow its base_model_name_or_path, to the hub if need be
            raise ModelError(f"{chosen} holds an adapter ({adapter[0]}), not a base model; name its base instead")
        return str(path.resolve())
    if path.exists():
        raise ModelError(f"not a model folder: {chosen} (expected a folder with config.json and weights)")
    if _looks_like_path(chosen):
        raise ModelError(f"no such model folder: {chosen}")
    return chosen


def model_folder(name: str | None = None) -> str:
    """What ``from_pretrained`` receives: a local folder (converting smollm2-135m on first use) or a hub id."""
    cname = canonical_name(name)
    if cname == TINY:
        folder = tiny_folder()
        if not (folder / "config.json").is_file():
            raise ModelError(f"plora-tiny is not built at {folder}; run: plora base build")
        return str(folder)
    if cname == SMOLLM2:
        from plora.models.gguf import smollm2_folder

        return str(smollm2_folder())
    return cname


@functools.lru_cache(maxsize=1)
def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be used now, or None when it can.

    ``HF_HUB_OFFLINE`` set, or the hub endpoint (through the configured HTTPS proxy, if any) not accepting a TCP
    connection within ``timeout`` seconds: checked once per process. When the probe fails, ``HF_HUB_OFFLINE=1`` is set
    for the rest of the process, so transformers, datasets and huggingface_hub read their caches at once instead of
    retrying for 30-60 s. With a network nothing changes: loading goes through the normal hub path.
    """
    import socket
    import urllib.request
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 8080
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:  # already imported: its constant was read at import time
            import sys

            constants = sys.modules.get("huggingface_hub.constants")
            if constants is not None:
                constants.HF_HUB_OFFLINE = True
        except AttributeError:
            pass
        return f"the hub ({host}:{port}) is unreachable: {err.strerror or type(err).__name__}"
    return None


def _suggestion(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), BUILTIN, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def hub_kwargs(cname: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a base: {} for folders and a reachable hub, ``local_files_only`` for
    a hub id that is cached while the hub cannot be used; a ModelError at once for one that is neither."""
    if cname in BUILTIN or Path(cname).is_dir():
        return {}
    why = hub_unreachable()
    if why is None:
        return {}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(cname, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub would refuse (HFValidationError) is simply not cached
        cached = None
    if isinstance(cached, str):
        return {"local_files_only": True}
    raise ModelError(
        f"base model {cname!r} is not plora-tiny, smollm2-135m or a local folder{_suggestion(cname)}, and as a hub id "
        f"it is not cached while {why}; {OFFLINE_HINT}"
    )


def require_base(name: str | None) -> str:
    """The canonical name of a base that can be loaded now (cheap: no torch); a ModelError otherwise."""
    cname = canonical_name(name)
    hub_kwargs(cname)
    return cname


def max_positions(name: str | None) -> int | None:
    """The longest input (tokens) the base takes, from its config.json without loading weights; None where that
    file is not on disk yet (a hub id not cached, smollm2-135m before its first conversion)."""
    cname = canonical_name(name)
    if cname == TINY:
        config = tiny_folder() / "config.json"
    elif cname == SMOLLM2:
        from plora.models.gguf import cached_folder

        config = cached_folder() / "config.json"
    elif Path(cname).is_dir():
        config = Path(cname) / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(cname, "config.json")
        except Exception:  # noqa: BLE001 - an id the hub would refuse is simply not cached
            cached = None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict):
        return None
    positions = values.get("n_positions", values.get("max_position_embeddings"))
    return positions if isinstance(positions, int) and positions > 0 else None


def _load_error(cname: str, err: Exception) -> ModelError:
    detail = " ".join(str(err).split())[:200]
    if Path(cname).is_dir():
        return ModelError(f"cannot load model folder {cname}: {type(err).__name__}: {detail}")
    return ModelError(f"cannot load base model {cname!r}{_suggestion(cname)} (not a local folder, and the hub has no "
                      f"such model or did not answer); {OFFLINE_HINT}")  # fmt: skip


@functools.lru_cache(maxsize=8)
def _tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, **hub_kwargs(source))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_base(name: str | None = None) -> LoadedBase:
    """Load a base model by name (``--base-model`` value or None for PLORA_BASE_MODEL / ``plora-tiny``)."""
    cname = canonical_name(name)
    source = model_folder(cname)
    hub = hub_kwargs(source)  # fails at once, before torch is imported, for a hub id the hub cannot serve
    try:
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar floods logs of runs that load many times
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **hub)
        tokenizer = _tokenizer(source)
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(cname, err) from None
    model.to(get_settings().device).eval()
    return LoadedBase(name=cname, model=model, tokenizer=tokenizer, digest=_digest_for(cname, source, model))


def _fingerprint(folder: Path) -> list[list[Any]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _digest_cache_path() -> Path:
    return cache_dir("digests") / "folders.json"


def _read_digest_cache() -> dict[str, Any]:
    """The recorded folder digests; a damaged file (not JSON, not an object) is a miss, rewritten on the next store."""
    try:
        cache = json.loads(_digest_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _cached_folder_digest(folder: Path) -> str | None:
    entry = _read_digest_cache().get(str(folder))
    if isinstance(entry, dict) and entry.get("fingerprint") == _fingerprint(folder):
        digest = entry.get("digest")
        return digest if isinstance(digest, str) else None
    return None


def _store_folder_digest(folder: Path, digest: str) -> None:
    path = _digest_cache_path()
    with file_lock(path.with_suffix(".lock")):  # two loads of different folders at once: both entries kept
        cache = _read_digest_cache()
        cache[str(folder)] = {"fingerprint": _fingerprint(folder), "digest": digest}
        atomic_write_json(path, cache)


def _digest_for(cname: str, source: str, model: Any | None) -> str:
    """The weights digest from whatever record exists; computed (and recorded) from ``model`` otherwise."""
    from plora.models.digest import weights_digest

    if cname == TINY:
        info_path = Path(source) / "build.json"
        if info_path.is_file():
            digest = json.loads(info_path.read_text()).get("digest")
            if digest:
                return digest
    if cname == SMOLLM2:
        from plora.models.gguf import read_marker

        marker = read_marker(Path(source)) or {}
        if marker.get("digest"):
            return marker["digest"]
    folder = Path(source)
    if folder.is_dir():
        cached = _cached_folder_digest(folder)
        if cached:
            return cached
    if model is None:
        return load_base(cname).digest
    digest = weights_digest(model)
    if folder.is_dir():
        _store_folder_digest(folder, digest)
    return digest


def base_digest(name: str | None = None) -> str:
    """The weights digest of a base, without loading torch when a record of it exists."""
    cname = canonical_name(name)
    return _digest_for(cname, model_folder(cname), None)


def _model_type(model_or_name: Any) -> str:
    if not isinstance(model_or_name, str | None):
        config = getattr(model_or_name, "config", None)
        return getattr(config, "model_type", "") or ""
    cname = canonical_name(model_or_name)
    if cname == TINY:
        return "gpt2"
    if cname == SMOLLM2:
        return "llama"
    config = Path(cname) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("model_type", "")
    hub = hub_kwargs(cname)
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(cname, **hub).model_type
    except (OSError, ValueError) as err:
        raise _load_error(cname, err) from None


def target_modules(model_or_name: Any, target_set: str) -> list[str]:
    """PEFT ``target_modules`` (suffixes) for ``attention``, ``mlp`` or ``all`` on this model's family."""
    if target_set not in TARGET_SETS:
        raise PloraError(f"unknown target set {target_set!r}: choose one of {', '.join(TARGET_SETS)}")
    model_type = _model_type(model_or_name)
    family = _FAMILIES.get(model_type)
    if family is None and not isinstance(model_or_name, str | None):
        names = {n.rsplit(".", 1)[-1] for n, _ in model_or_name.named_modules()}
        family = _LLAMA if {"q_proj", "o_proj"} <= names else _GPT2 if "c_attn" in names else None
    if family is None:
        raise ModelError(f"no LoRA target map for model type {model_type or 'unknown'!r} (known: gpt2, llama family)")
    if target_set == "all":
        return family["attention"] + family["mlp"]
    return list(family[target_set])
