"""JSON as plora reads it from other people's files: ``NaN``/``Infinity`` refused (not JSON, and a NaN threshold
or tensor shape would compare false everywhere), duplicate keys refused where a document is signed or judged (two
values for one key let two readers see two documents).

    >>> from plora.strictjson import loads_strict
    >>> loads_strict(b'{"r": 4}')
    {'r': 4}
    >>> loads_strict('{"tau": NaN}')
    Traceback (most recent call last):
    ...
    ValueError: NaN is not valid JSON
    >>> loads_strict('{"r": 4, "r": 8}')
    Traceback (most recent call last):
    ...
    ValueError: duplicate key 'r'
    >>> loads_strict('{"r": 4, "r": 8}', unique_keys=False)
    {'r': 8}

Callers keep their own error type and wording: they catch ``ValueError`` (``json.JSONDecodeError`` is one) and
check the top-level type themselves.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: ValueError on a key given twice."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def refuse_constant(name: str) -> NoReturn:
    """``parse_constant`` for :func:`json.loads`: ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(data: bytes | str, *, unique_keys: bool = True) -> Any:
    """:func:`json.loads` refusing NaN/Infinity and, unless ``unique_keys=False``, duplicate keys (ValueError)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    hook = no_duplicate_keys if unique_keys else None
    return json.loads(data, object_pairs_hook=hook, parse_constant=refuse_constant)
