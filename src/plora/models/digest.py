"""A SHA-256 digest of a model's weights: the identity of a base that a plasmid's manifest records.

    >>> from plora.models import load_base, weights_digest
    >>> base = load_base("plora-tiny")
    >>> weights_digest(base.model) == base.digest
    True

The digest covers the state dict, names sorted; for each tensor its name, dtype, shape and raw bytes. Tied weights
(GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) count once, under the name registered first, which is the
name ``save_pretrained`` keeps in the safetensors file.
"""

from __future__ import annotations

import hashlib
from typing import Any


def weights_digest(model: Any) -> str:
    """SHA-256 hex digest over the model's state dict (see the module docstring for the exact recipe)."""
    import torch

    seen: set[tuple[int, int, str]] = set()
    kept: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size(),
               tensor.numel(), str(tensor.dtype))  # fmt: skip
        if key in seen:
            continue
        seen.add(key)
        kept[name] = tensor
    h = hashlib.sha256()
    for name in sorted(kept):
        t = kept[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(b"\0")
        h.update(str(t.dtype).removeprefix("torch.").encode())
        h.update(b"\0")
        h.update(",".join(str(d) for d in t.shape).encode())
        h.update(b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
