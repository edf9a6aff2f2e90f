"""Base models that work offline: the shipped ``plora-tiny``, ``smollm2-135m`` (GGUF), any local folder or hub id.

    >>> from plora.models import load_base, target_modules
    >>> base = load_base("plora-tiny")
    >>> base.name, len(base.digest)
    ('plora-tiny', 64)
    >>> target_modules(base.model, "all")
    ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj']

Importing this package does not import torch; :func:`load_base` and :func:`weights_digest` do.
"""

from plora.models.digest import weights_digest
from plora.models.registry import (
    BUILTIN,
    SMOLLM2,
    TARGET_SETS,
    TINY,
    LoadedBase,
    base_digest,
    canonical_name,
    load_base,
    model_folder,
    target_modules,
    tiny_folder,
)

__all__ = [
    "BUILTIN",
    "SMOLLM2",
    "TARGET_SETS",
    "TINY",
    "LoadedBase",
    "base_digest",
    "canonical_name",
    "load_base",
    "model_folder",
    "target_modules",
    "tiny_folder",
    "weights_digest",
]
