"""Deterministic train/dev/test assignment by hashing a fact key, and seeded draws.

    >>> from plora.data.splits import split_of, draw
    >>> split_of("element:Fe") in ("train", "dev", "test")
    True
    >>> draw(list(range(10)), samples=3, seed=0) == draw(list(range(10)), samples=3, seed=0)
    True

A key's split is the first 8 bytes of its SHA-256, modulo 100: below 80 train, below 90 dev, else test. The hash is
stable across processes and machines (unlike Python's ``hash``), so every phrasing of a fact lands in one split.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from plora.errors import DataError

T = TypeVar("T")

SPLITS = ("train", "dev", "test")
SPLIT_PERCENT = {"train": 80, "dev": 10, "test": 10}
_ALIASES = {
    "training": "train",
    "validation": "dev",
    "valid": "dev",
    "val": "dev",
    "eval": "dev",
    "development": "dev",
    "testing": "test",
}


def normalize_split(split: str) -> str:
    """``train``/``dev``/``test`` (``validation``, ``val`` and ``eval`` mean ``dev``); anything else is a DataError."""
    name = str(split).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected train, dev or test)")
    return name


def split_of(key: str) -> str:
    """The split a fact (or, for files without fact ids, a question) belongs to: 80/10/10 by SHA-256."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["dev"]:
        return "dev"
    return "test"


def partition(items: Iterable[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    """Group items by ``split_of(key(item))``, keeping their order; the key is computed once per distinct value."""
    out: dict[str, list[T]] = {s: [] for s in SPLITS}
    memo: dict[str, str] = {}
    for item in items:
        k = key(item)
        split = memo.get(k)
        if split is None:
            split = memo[k] = split_of(k)
        out[split].append(item)
    return out


def draw(items: Sequence[T], samples: int | None, seed: int) -> list[T]:
    """A seeded random order of ``items``, cut to ``samples`` when given (same inputs -> same list, same order)."""
    if samples is not None and samples <= 0:
        raise DataError(f"samples must be a positive integer, got {samples}")
    rng = random.Random(seed)
    n = len(items)
    if samples is None or samples >= n:
        order = list(range(n))
        rng.shuffle(order)
    else:
        order = rng.sample(range(n), samples)
    return [items[i] for i in order]
