"""A plasmid folder on disk: written atomically, read without torch.

    >>> from plora.plasmid import read_plasmid
    >>> p = read_plasmid("out/legal")
    >>> sorted(p.modules())[:1]
    ['transformer.h.0.attn.c_attn']
    >>> a, b = p.pair("transformer.h.0.attn.c_attn")    # numpy arrays, shapes (r, in) and (out, r)
    >>> a.shape, b.shape
    ((4, 128), (384, 4))

Layout (PEFT-compatible: ``PeftModel.from_pretrained`` loads the folder as it is)::

    adapter_config.json         PEFT LoraConfig
    adapter_model.safetensors   keys base_model.model.<module>.lora_A.weight / .lora_B.weight
    plora.yml                   manifest (see plora.manifest)
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plora.errors import ManifestError
from plora.fsio import staging_dir
from plora.hashing import sha256_bytes, sha256_file
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    ARTIFACT_NAME,
    Artifact,
    Manifest,
    read_manifest,
    write_manifest,
)

_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


# What a plasmid's adapter_config.json may hold. PEFT loads the folder as it is, so a setting that changes what PEFT
# builds (DoRA, an initialisation that rewrites the base weights such as PiSSA or OLoRA, excluded or extra modules,
# per-module ranks, ...) would make the model PEFT runs differ from the one the gate screened: only plain LoRA
# (W + alpha/r * B A on the listed modules) passes. An allowlist, so that a setting a newer PEFT adds is refused
# until someone decides it is harmless.
CONFIG_COMPARED = frozenset({"peft_type", "r", "lora_alpha", "target_modules"})  # compared with plora.yml by the gate
CONFIG_FREE = frozenset({
    "task_type", "base_model_name_or_path", "revision", "inference_mode", "peft_version",  # metadata
    "lora_dropout",  # off at inference
    "fan_in_fan_out",  # PEFT sets it from the layer type (Conv1D or Linear) whatever the file says
    "layers_pattern", "megatron_core", "qalora_group_size",  # read only with a setting that must be empty
})


def init_rewrites_base(value: Any) -> bool:
    """True for an ``init_lora_weights`` that makes PEFT change the base weights when it loads the adapter."""
    return not (isinstance(value, bool) or value == "gaussian")


def _transformers_class(mapping: Any) -> bool:
    if not isinstance(mapping, dict) or set(mapping) - {"base_model_class", "parent_library"}:
        return False
    library, cls = mapping.get("parent_library"), mapping.get("base_model_class")
    return (isinstance(library, str) and re.fullmatch(r"transformers(\.[A-Za-z_][A-Za-z0-9_]*)*", library) is not None
            and isinstance(cls, str) and cls.isidentifier())


def config_beyond_plain_lora(config: Mapping[str, Any]) -> list[str]:
    """The adapter_config.json settings that make PEFT build something other than plain LoRA, one line each."""
    out: list[str] = []
    for key, value in config.items():
        if key in CONFIG_COMPARED or key in CONFIG_FREE:
            continue
        if key == "init_lora_weights":
            if init_rewrites_base(value):
                out.append(f"init_lora_weights={value!r} rewrites the base weights when PEFT loads the adapter")
        elif key == "auto_mapping":  # PEFT's AutoPeftModel imports parent_library to build the base model
            if value is not None and not _transformers_class(value):
                out.append(f"auto_mapping={value!r}: only a transformers model class may be named")
        elif key == "bias":
            if value != "none":
                out.append(f"bias={value!r}: a plasmid carries no bias terms (bias must be 'none')")
        elif not (value is None or value is False or value == {} or value == [] or value == ""):
            out.append(f"{key} must be empty, found {value!r}")
    return out


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")


def unsafe_files(folder: str | os.PathLike[str]) -> list[str]:
    """Why entries of a plasmid folder may not be there, one line each: symlinks, FIFOs, sockets and devices
    (plasmid files are regular files: reading a FIFO waits forever, a device never ends) and pickle-format files
    (loading one can run code). The gate's first stage and ``plora verify`` both refuse them. Raises OSError when the
    folder cannot be listed."""
    out = []
    for child in sorted(Path(folder).iterdir()):
        mode = child.lstat().st_mode
        if stat.S_ISLNK(mode):
            out.append(f"{child.name} is a symlink (plasmid files must be regular files)")
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            out.append(f"{child.name} is a FIFO, socket or device (plasmid files must be regular files)")
        elif child.suffix.lower() in PICKLE_SUFFIXES:
            out.append(f"{child.name}: pickle-format files are never accepted")
    return out


def stray_weights(folder: str | os.PathLike[str], artifact: str) -> list[str]:
    """Why ``.safetensors`` files other than the manifest's ``artifact`` may not be in a plasmid folder, one line
    each: nothing hashes or signs them, yet PEFT's ``from_pretrained`` loads ``adapter_model.safetensors`` whatever the
    manifest names, so a spare one beside a renamed artifact would be loaded unsigned. ``plora verify``, ``plora sign``
    and the gate refuse them. Raises OSError when the folder cannot be listed."""
    return [
        f"{child.name}: a weights file plora.yml does not name (only its artifact {artifact!r} is hashed and signed)"
        for child in sorted(Path(folder).iterdir())
        if child.suffix.lower() == ".safetensors" and child.name != artifact
    ]


def adapter_config_bytes(config: Mapping[str, Any]) -> bytes:
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_plasmid(
    out: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    adapter_config: Mapping[str, Any],
    **manifest_fields: Any,
) -> Manifest:
    """Write ``out/`` as a complete plasmid, or leave it untouched if anything fails.

    ``manifest_fields`` are every :class:`Manifest` field except ``artifact``, which is computed here
    from the bytes actually written.
    """
    from safetensors.numpy import save_file

    with staging_dir(out) as stage:
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(arrays, str(stage / ARTIFACT_NAME), metadata={"format": "pt"})
        cfg = adapter_config_bytes(adapter_config)
        (stage / ADAPTER_CONFIG_NAME).write_bytes(cfg)
        artifact = Artifact(
            filename=ARTIFACT_NAME,
            sha256=sha256_file(stage / ARTIFACT_NAME),
            size_bytes=(stage / ARTIFACT_NAME).stat().st_size,
            config_sha256=sha256_bytes(cfg),
        )
        manifest = Manifest(artifact=artifact, **manifest_fields)
        write_manifest(stage, manifest)
    return manifest


def parse_lora_key(key: str) -> tuple[str, str] | None:
    """``base_model.model.X.lora_A.weight`` -> ``("X", "A")``; None for keys that are not LoRA factors."""
    m = _KEY.match(key)
    return (m.group("module"), m.group("which")) if m else None


def suffix_match(module: str, suffix: str) -> bool:
    """Whether a target_modules entry names ``module``, as PEFT matches a list: the name or a dotted suffix of it."""
    return module == suffix or module.endswith("." + suffix)


@dataclass
class Plasmid:
    folder: Path
    manifest: Manifest
    tensors: dict[str, np.ndarray]

    def modules(self) -> list[str]:
        return sorted({parsed[0] for k in self.tensors if (parsed := parse_lora_key(k))})

    def pair(self, module: str) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) for a module: A is (r, in_features), B is (out_features, r), as PEFT stores them."""
        prefix = f"base_model.model.{module}."
        a = next(v for k, v in self.tensors.items() if k.startswith(prefix) and parse_lora_key(k) == (module, "A"))
        b = next(v for k, v in self.tensors.items() if k.startswith(prefix) and parse_lora_key(k) == (module, "B"))
        return a, b

    @property
    def scaling(self) -> float:
        return self.manifest.lora.alpha / self.manifest.lora.r


def artifact_path(folder: str | os.PathLike[str], manifest: Manifest) -> Path:
    folder = Path(folder)
    path = folder / manifest.artifact.filename
    if path.resolve().parent != folder.resolve():
        raise ManifestError(f"artifact {manifest.artifact.filename!r} escapes the plasmid folder")
    return path


def load_tensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy; a truncated or malformed file is a ManifestError."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ManifestError(f"{path}: artifact missing") from None
    except Exception as err:  # safetensors raises SafetensorError / OSError on bad headers or truncation
        raise ManifestError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None


def read_plasmid(folder: str | os.PathLike[str]) -> Plasmid:
    folder = Path(folder)
    manifest = read_manifest(folder)
    return Plasmid(folder=folder, manifest=manifest, tensors=load_tensors(artifact_path(folder, manifest)))
