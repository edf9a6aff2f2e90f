"""Read a plasmid (or a plain PEFT adapter folder) into torch LoRA factors, once, for injection.

    >>> from plora.loader.source import read_adapter
    >>> src = read_adapter("out/legal")
    >>> a, b, scale = src.modules["transformer.h.0.attn.c_attn"]   # A (r, in), B (out, r), alpha/r
    >>> tuple(a.shape), tuple(b.shape), scale
    ((4, 128), (384, 4), 2.0)

Three inputs are accepted: a :class:`plora.plasmid.Plasmid` already in memory, a plasmid folder (``plora.yml`` +
``adapter_config.json`` + ``adapter_model.safetensors``), or a *raw PEFT folder* saved by plain PEFT (no
``plora.yml``: r, alpha, rsLoRA and rank/alpha patterns come from ``adapter_config.json``, and there is no base model
digest to check). The artifact file is read once into memory; for a plasmid its SHA-256 is checked against the
manifest on the same bytes (about 35 us per 50 KB), so a swapped file is refused before anything is injected.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plora.errors import LoaderError, ManifestError
from plora.hashing import sha256_bytes
from plora.loader.tensorfile import load_safetensors
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    ARTIFACT_NAME,
    MANIFEST_NAME,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Manifest,
    loads_manifest,
)
from plora.plasmid import (
    Plasmid,
    artifact_path,
    config_beyond_plain_lora,
    init_rewrites_base,
    parse_lora_key,
    suffix_match,
)

# adapter_config.json fields that change what the factors mean; a plain LoRA is all this loader applies.
_UNSUPPORTED_FLAGS = ("use_dora", "use_qalora", "lora_bias")
# Settings beyond plain LoRA that a raw PEFT folder may hold because this loader applies them as PEFT does (_scales).
_APPLIED_SETTINGS = frozenset({"use_rslora", "rank_pattern", "alpha_pattern"})


@dataclass
class AdapterSource:
    """LoRA factors ready to inject: ``modules[name] = (A (r, in), B (out, r), scale)``, names relative to the model."""

    label: str
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    manifest: Manifest | None = None
    folder: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def base_digest(self) -> str | None:
        return self.manifest.base_model.digest if self.manifest is not None else None

    @property
    def base_name(self) -> str | None:
        return self.manifest.base_model.name if self.manifest is not None else None


@functools.lru_cache(maxsize=256)
def _parse_manifest(data: bytes, source: str) -> Manifest:
    # Parsing plora.yml with the strict pure-Python YAML loader costs ~8 ms, 30x a whole side-mode swap. Manifests
    # are immutable, so identical bytes are parsed once; the file itself is still read on every inject.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{source}: cannot read manifest: {err}") from None
    return loads_manifest(text, source=source)


def _read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest, or None when it has none (a raw PEFT folder)."""
    path = folder / MANIFEST_NAME
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        if not folder.is_dir():
            raise LoaderError(f"{folder}: not a folder (expected a plasmid or PEFT adapter folder)") from None
        return None
    except NotADirectoryError:
        raise LoaderError(f"{folder}: not a folder (expected a plasmid or PEFT adapter folder)") from None
    except OSError as err:
        raise LoaderError(f"{path}: cannot read the manifest ({err.strerror or err})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: manifest is larger than the {MAX_MANIFEST_BYTES} bytes allowed")
    return _parse_manifest(data, str(path))


def _pattern_regex(key: str) -> str:
    # PEFT's get_pattern_key: the first pattern that matches a dotted suffix of the module name wins.
    return rf"(.*\.)?({key})$"


def _pattern_value(patterns: dict[str, Any], module: str, default: float) -> float:
    for key, value in patterns.items():
        if re.match(_pattern_regex(key), module):
            return float(value)
    return float(default)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_values(config: dict[str, Any], source: str) -> None:
    """r, lora_alpha and the rank / alpha patterns as PEFT reads them, or a LoaderError saying which is wrong."""
    if not _is_rank(config.get("r", 8)):
        raise LoaderError(f"{source}: r must be a positive integer, got {config.get('r')!r}")
    if not _is_number(config.get("lora_alpha", 8)):
        raise LoaderError(f"{source}: lora_alpha must be a finite number, got {config.get('lora_alpha')!r}")
    for name, valid, what in (
        ("rank_pattern", _is_rank, "positive integers"),
        ("alpha_pattern", _is_number, "finite numbers"),
    ):
        patterns = config.get(name)
        patterns = {} if patterns is None else patterns
        if not isinstance(patterns, dict):
            raise LoaderError(f"{source}: {name} must map module patterns to {what}, got {patterns!r}")
        for key, value in patterns.items():
            try:
                re.compile(_pattern_regex(key))
            except re.error as err:
                raise LoaderError(f"{source}: {name} key {key!r} is not a valid regex ({err})") from None
            if not valid(value):
                raise LoaderError(f"{source}: {name} must map module patterns to {what}, got {key!r}: {value!r}")


def _finite(t: torch.Tensor) -> bool:
    # numpy's isfinite costs a third of torch's per call (the inject hot path); numpy has no bfloat16
    if t.dtype == torch.bfloat16:
        return bool(torch.isfinite(t).all())
    return bool(np.isfinite(t.numpy()).all())


def _finite_file(tensors: dict[str, torch.Tensor], data: np.ndarray | None) -> bool:
    """True when one pass over the safetensors file's data bytes shows every value finite: a float32 dot product of
    the data with itself (NaN and Inf propagate through it), one BLAS call instead of one check per factor (240 of
    them cost ~1 ms on SmolLM2, a quarter of a side inject). False proves nothing (other dtypes, a sum of squares
    past float32's range): the caller then checks factor by factor."""
    if data is None or any(t.dtype != torch.float32 for t in tensors.values()):
        return False
    start = 8 + int.from_bytes(data[:8].tobytes(), "little")
    body = data[start:]
    if start % 4 or len(body) != 4 * sum(t.numel() for t in tensors.values()):
        return False
    x = body.view(np.float32)
    return math.isfinite(float(np.dot(x, x)))


def _pairs(
    tensors: dict[str, torch.Tensor], where: str, data: np.ndarray | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """LoRA factor pairs by module, every value finite. ``data``: the file's bytes the tensors view (one finiteness
    pass over them, see _finite_file)."""
    finite = _finite_file(tensors, data)
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        parsed = parse_lora_key(key)
        if parsed is None:
            raise LoaderError(f"{where}: tensor {key!r} is not a LoRA factor (only lora_A/lora_B on Linear/Conv1D)")
        factors = found.setdefault(parsed[0], {})
        if parsed[1] in factors:
            raise LoaderError(f"{where}: module {parsed[0]!r} has two lora_{parsed[1]} tensors (one is {key!r})")
        factors[parsed[1]] = value
    pairs = {}
    for module, ab in found.items():
        if set(ab) != {"A", "B"}:
            raise LoaderError(f"{where}: module {module!r} has lora_{''.join(ab)} but not both lora_A and lora_B")
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise LoaderError(
                f"{where}: module {module!r} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, "
                "expected (r, in) and (out, r)"
            )
        if not finite and not (_finite(a) and _finite(b)):
            # NaN or Inf would poison every output of a side path and every weight it is merged into
            raise LoaderError(f"{where}: module {module!r} has NaN or Inf in its LoRA factors")
        pairs[module] = (a, b)
    if not pairs:
        raise LoaderError(f"{where}: no LoRA factors found")
    return pairs


def _check_targets(modules: Iterable[str], declared: Any, where: str, what: str = "target_modules") -> None:
    """Every module with factors must be one the adapter declares (PEFT's matching: a list entry names the module or a
    dotted suffix of it, a string is a regex the whole name must match); PEFT would not load the others."""
    if isinstance(declared, str) and declared == "all-linear":
        return  # every Linear / Conv1D layer: the injection itself refuses anything else
    if isinstance(declared, str):
        try:
            pattern = re.compile(declared)
        except re.error as err:
            raise LoaderError(f"{where}: {what} {declared!r} is not a valid regex ({err})") from None
        outside = [m for m in modules if not pattern.fullmatch(m)]
    elif isinstance(declared, list | tuple) and declared and all(isinstance(t, str) for t in declared):
        outside = [m for m in modules if not any(suffix_match(m, t) for t in declared)]
    else:
        raise LoaderError(f"{where}: {what} must be a list of module names or a regex, found {declared!r}")
    if outside:
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        raise LoaderError(
            f"{where}: factors for {', '.join(sorted(outside)[:3])}{more}, outside the declared {what} "
            f"{list(declared) if not isinstance(declared, str) else declared!r} (PEFT would not load them)"
        )


@functools.lru_cache(maxsize=256)
def _parse_config(data: bytes, source: str) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except ValueError as err:
        raise LoaderError(f"{source}: unreadable adapter config ({err})") from None
    if not isinstance(config, dict):
        raise LoaderError(f"{source}: expected a JSON object")
    for flag in _UNSUPPORTED_FLAGS:
        if config.get(flag):
            raise LoaderError(f"{source}: {flag}=true is not supported by the plora loader (plain LoRA only)")
    if config.get("peft_type", "LORA") != "LORA":
        raise LoaderError(f"{source}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("modules_to_save"):
        raise LoaderError(f"{source}: modules_to_save is not supported (a plasmid carries LoRA factors only)")
    if init_rewrites_base(config.get("init_lora_weights", True)):
        raise LoaderError(f"{source}: init_lora_weights={config.get('init_lora_weights')!r} rewrites the base weights "
                          "when PEFT loads the adapter; the plora loader applies plain LoRA only")
    if config.get("exclude_modules"):
        raise LoaderError(f"{source}: exclude_modules is not supported (PEFT would skip factors the file carries)")
    # Anything else PEFT builds differently from plain LoRA (layers_to_transform, aLoRA's invocation tokens, a
    # setting a newer PEFT adds) would make the injected model differ from the one PEFT runs: the plasmids' allowlist.
    beyond = config_beyond_plain_lora({k: v for k, v in config.items() if k not in _APPLIED_SETTINGS})
    if beyond:
        raise LoaderError(f"{source}: {beyond[0]} (the plora loader applies plain LoRA only)")
    _check_values(config, source)
    return config


def _read_config(folder: Path) -> dict[str, Any]:
    from plora.fsio import read_bounded

    path = folder / ADAPTER_CONFIG_NAME
    if not path.exists():
        raise LoaderError(f"{folder}: no {ADAPTER_CONFIG_NAME} (not a plasmid or PEFT adapter folder)")
    data = read_bounded(path, MAX_CONFIG_BYTES, "adapter config", LoaderError)
    return dict(_parse_config(data, str(path)))  # parsed once per content; a copy so callers cannot alter the memo


# Artifact files whose SHA-256 was checked, by stat identity -> digest. Like git's index: a file rewritten, replaced
# or touched gets a new inode / size / mtime / ctime (ctime cannot be set back from user space) and is hashed again.
# File times tick coarsely (a few ms), so as git does with "racy" entries, a file changed in the last 2 s is not
# remembered: a rewrite within the same tick could otherwise keep the same stat identity.
_VERIFIED: dict[tuple[int, ...], str] = {}
_RACY_NS = 2_000_000_000


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_bytes(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """The file's bytes in a private writable buffer (uninitialised numpy memory: no zero-fill pass); with
    ``expected_sha256``, checked against it, hashing only when this version of the file was not verified before."""
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        data = np.empty(before.st_size, dtype=np.uint8)
        got = fh.readinto(memoryview(data))
        after = _stat_key(os.fstat(fh.fileno()))
    if got != before.st_size:
        data = data[:got]
    if expected_sha256 is not None:
        stable = after == _stat_key(before)  # not modified while we read it
        if not (stable and _VERIFIED.get(after) == expected_sha256):
            if sha256_bytes(data) != expected_sha256:
                raise LoaderError(f"{path}: SHA-256 does not match the manifest's artifact.sha256 (file changed?)")
            if stable and time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) > _RACY_NS:
                if len(_VERIFIED) >= 4096:
                    _VERIFIED.clear()
                _VERIFIED[after] = expected_sha256
    return data


def _scales(
    config: dict[str, Any], pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], where: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    r_default = config.get("r", 8)
    alpha_default = config.get("lora_alpha", 8)
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora"))
    out = {}
    for module, (a, b) in pairs.items():
        r = _pattern_value(rank_pattern, module, r_default)
        alpha = _pattern_value(alpha_pattern, module, alpha_default)
        if int(r) != a.shape[0]:
            raise LoaderError(f"{where}: module {module!r} has rank {a.shape[0]} but the config says r={int(r)}")
        out[module] = (a, b, alpha / math.sqrt(r) if rslora else alpha / r)
    return out


def _from_plasmid_object(p: Plasmid) -> AdapterSource:
    where = str(p.folder)
    # copies: the caller owns p.tensors, and a later change to them must not reach an injected model
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in p.tensors.items()}
    pairs = _pairs(tensors, where)
    _check_targets(pairs, list(p.manifest.lora.targets), where, "lora.targets")
    return AdapterSource(
        label=p.manifest.plasmid_id,
        modules=_check_manifest_rank(p.manifest, pairs, where),
        manifest=p.manifest,
        folder=p.folder,
    )


def _check_manifest_rank(
    manifest: Manifest, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], where: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    scale = manifest.lora.alpha / manifest.lora.r
    for module, (a, _) in pairs.items():
        if a.shape[0] != manifest.lora.r:
            raise LoaderError(
                f"{where}: module {module!r} has rank {a.shape[0]}, the manifest says r={manifest.lora.r}"
            )
    return {m: (a, b, scale) for m, (a, b) in pairs.items()}


def read_adapter(plasmid: str | os.PathLike[str] | Plasmid | AdapterSource, *, verify: bool = True) -> AdapterSource:
    """Read a plasmid or raw PEFT folder; LoaderError on anything that is not a plain LoRA adapter.

    ``verify`` checks the artifact's SHA-256 and size against ``plora.yml`` (plasmids only; hashed once per file
    version, see ``_VERIFIED``).
    """
    if isinstance(plasmid, AdapterSource):
        return plasmid
    if isinstance(plasmid, Plasmid):
        return _from_plasmid_object(plasmid)
    folder = Path(plasmid)
    try:
        manifest = _read_manifest(folder)
        path = artifact_path(folder, manifest) if manifest is not None else folder / ARTIFACT_NAME
    except (ManifestError, OSError) as err:
        raise LoaderError(str(err)) from None
    config = _read_config(folder)
    try:
        data = _read_bytes(path, manifest.artifact.sha256 if manifest is not None and verify else None)
    except FileNotFoundError:
        raise LoaderError(f"{path}: adapter weights missing") from None
    except OSError as err:  # a folder (IsADirectoryError), a permission, a device that fails to read
        raise LoaderError(f"{path}: cannot read the adapter weights ({err.strerror or err})") from None
    if manifest is not None and verify and len(data) != manifest.artifact.size_bytes:
        raise LoaderError(f"{path}: {len(data)} bytes, the manifest says {manifest.artifact.size_bytes}")
    pairs = _pairs(load_safetensors(data, str(path)), str(path), data)
    _check_targets(pairs, config.get("target_modules"), str(folder))
    if manifest is not None:
        _check_targets(pairs, list(manifest.lora.targets), str(folder), "lora.targets")
    if manifest is None:
        return AdapterSource(
            label=folder.name, modules=_scales(config, pairs, str(folder)), folder=folder, config=config
        )
    if config.get("r") != manifest.lora.r or float(config.get("lora_alpha", -1)) != manifest.lora.alpha:
        raise LoaderError(
            f"{folder}: adapter_config.json (r={config.get('r')}, lora_alpha={config.get('lora_alpha')}) disagrees "
            f"with plora.yml (r={manifest.lora.r}, alpha={manifest.lora.alpha})"
        )
    beyond = config_beyond_plain_lora(config)
    if beyond:
        raise LoaderError(f"{folder}: a plasmid must be plain LoRA: {beyond[0]}")
    return AdapterSource(
        label=manifest.plasmid_id,
        modules=_check_manifest_rank(manifest, pairs, str(folder)),
        manifest=manifest,
        folder=folder,
        config=config,
    )
