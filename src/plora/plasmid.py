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
