"""Deterministic split assignment by hashing a fact key, and seeded draws.

    >>> from plora.data.splits import split_of, draw
    >>> split_of("element:Fe") in ("train", "dev", "test")
    True
    >>> draw(list(range(10)), samples=3, seed=0) == draw(list(range(10)), samples=3, seed=0)
    True

A key's bucket is the first 8 bytes of its SHA-256, modulo 100: below 80 train, below 90 dev, else test. The hash is
stable across processes and machines (unlike Python's ``hash``), so every wording of a fact lands in one split.

Built-in domains have two more splits (``BUILTIN_SPLITS``), still over facts and wordings, never over items alone:

- ``paraphrase``: train facts asked in the wording held out from training (``train`` never holds that wording);
  it measures what a plasmid carries from its training facts, not from having seen the question;
- ``calibration``: half of the test facts (buckets 90-94), to fit a temperature on items no evaluation uses;
  ``test`` keeps buckets 95-99.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

from plora.errors import DataError

T = TypeVar("T")

SPLITS = ("train", "dev", "test")
BUILTIN_SPLITS = (*SPLITS, "paraphrase", "calibration")
SPLIT_PERCENT = {"train": 80, "dev": 10, "test": 10}
CALIBRATION_BUCKETS = range(90, 95)
_ALIASES = {
    "training": "train",
    "validation": "dev",
    "valid": "dev",
    "val": "dev",
    "eval": "dev",
    "development": "dev",
    "testing": "test",
    "calib": "calibration",
}


def normalize_split(split: str) -> str:
    """A split name (``validation``, ``val`` and ``eval`` mean ``dev``); anything else is a DataError."""
    name = str(split).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in BUILTIN_SPLITS:
        raise DataError(f"unknown split {split!r} (expected {', '.join(BUILTIN_SPLITS)})")
    return name


def bucket_of(key: str) -> int:
    """0..99 from the SHA-256 of ``key``: the one number every split decision is made from."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100


def split_of(key: str) -> str:
    """The split a fact (or, for files without fact ids, a question) belongs to: 80/10/10 by SHA-256."""
    bucket = bucket_of(key)
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["dev"]:
        return "dev"
    return "test"


def builtin_split_of(fact_id: str, held_out_wording: bool) -> str:
    """The split of one built-in item: its fact's split, refined into paraphrase and calibration (module doc)."""
    split = split_of(fact_id)
    if split == "train":
        return "paraphrase" if held_out_wording else "train"
    if split == "test" and bucket_of(fact_id) in CALIBRATION_BUCKETS:
        return "calibration"
    return split


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
