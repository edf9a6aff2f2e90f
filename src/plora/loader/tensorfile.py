"""The loader's safetensors reader: numpy views over the file's bytes, with safetensors' own validity rules.

    >>> import numpy as np
    >>> from plora.loader.tensorfile import load_safetensors
    >>> data = np.fromfile("out/legal/adapter_model.safetensors", dtype=np.uint8)
    >>> tensors = load_safetensors(data, "out/legal/adapter_model.safetensors")   # name -> torch tensor (a view)

A file that safetensors, PEFT or the gate would refuse is refused here too (LoaderError, one line): a header that
names a key twice, tensors that overlap, leave gaps or do not start at the first data byte, and bytes after the last
tensor ("file not fully covered").
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import numpy as np
import torch

from plora.errors import LoaderError
from plora.strictjson import loads_strict

_DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8")}


def _check_layout(header: dict[str, Any], body: int, where: str) -> bool:
    """safetensors' own rule: tensors, in offset order, cover the data from byte 0 to its end without gaps or
    overlaps; LoaderError when they do not, False when an entry is malformed (safetensors then says what)."""
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            lo, hi = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            return False
        spans.append((lo, hi, name))
    end = 0
    for lo, hi, name in sorted(spans):
        if lo != end or hi < lo:
            raise LoaderError(
                f"{where}: not a valid safetensors file: tensor {name!r} takes data bytes {lo}-{hi}, expected it to "
                f"start at {end} (tensors must follow each other without gaps or overlaps)"
            )
        end = hi
    if end != body:
        raise LoaderError(
            f"{where}: not a valid safetensors file: the tensors end at data byte {end} of {body} (file not fully "
            "covered)"
        )
    return True


def load_safetensors(data: np.ndarray, where: str) -> dict[str, torch.Tensor]:
    """Tensors viewing ``data`` (no copy). The safetensors layout is an 8-byte header size, a JSON header and the
    raw bytes; numpy views over them cost a third of ``safetensors.torch.load``, which copies each tensor out.
    The header must not repeat a key, and the tensors must cover the data exactly, as safetensors requires.
    Anything unusual (bf16 and other dtypes numpy lacks, unaligned offsets) goes to safetensors itself."""
    try:
        n = int.from_bytes(data[:8].tobytes(), "little")
        raw = data[8 : 8 + n].tobytes() if 8 + n <= len(data) else b""
        header = loads_strict(raw)
    except ValueError as err:
        header = None
        with contextlib.suppress(ValueError):
            json.loads(raw)  # JSON, but strict JSON refuses it: a key given twice, or a NaN
            header = str(err)
        if header is not None:
            raise LoaderError(f"{where}: not a valid safetensors file: its header is not strict JSON ({err})") from None
    if not isinstance(header, dict):
        return _load_with_safetensors(data, where)
    start = 8 + n
    body = len(data) - start
    if not _check_layout(header, body, where):
        return _load_with_safetensors(data, where)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            lo, hi = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            return _load_with_safetensors(data, where)
        size = dtype.itemsize * math.prod(shape)
        if not 0 <= lo <= hi <= body or hi - lo != size or (start + lo) % dtype.itemsize or min(shape, default=1) < 0:
            return _load_with_safetensors(data, where)
        out[name] = torch.from_numpy(data[start + lo : start + hi].view(dtype).reshape(shape))
    return out


def _load_with_safetensors(data: np.ndarray, where: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data.tobytes())
    except Exception as err:  # safetensors raises SafetensorError on a bad header or truncation
        raise LoaderError(f"{where}: not a readable safetensors file ({type(err).__name__}: {err})") from None
