"""Helpers shared by the built-in domain builders: locating packaged data, versions, number formatting."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from plora.errors import DataError

MAX_ANSWER_WORDS = 12

Row = tuple[str, str, str]
"""(question, answer, fact_id): what a builder yields; QA objects are made only for the rows a caller draws."""


def package_dir(module: str) -> Path:
    """The folder of an installed package, found WITHOUT importing it (simple_icd_10_cm parses 10 MB on import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package '{module}' is not installed (run `make setup`)")
    return Path(next(iter(spec.submodule_search_locations)))


def dist_version(dist: str) -> str:
    from importlib import metadata  # ~50 ms to import: only when a DomainInfo is asked for

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def short_enough(text: str, max_words: int = MAX_ANSWER_WORDS) -> bool:
    """Answers a ~1M-parameter model can hope to learn: non-empty and at most ``max_words`` words."""
    return bool(text) and len(text.split()) <= max_words


def fmt_number(x: float, sig: int = 4) -> str:
    """``x`` rounded to ``sig`` significant figures, in plain decimal notation without trailing zeros.

    >>> fmt_number(4.828032), fmt_number(86400.0), fmt_number(0.30480), fmt_number(-40.0)
    ('4.828', '86400', '0.3048', '-40')
    """
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    decimals = sig - 1 - math.floor(math.log10(abs(x)))
    rounded = round(x, decimals)
    text = f"{rounded:.{max(decimals, 0)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
