"""Helpers shared by the built-in domain builders: question types with their wordings, packaged data, numbers.

>>> from plora.data.domains._util import QuestionType
>>> symbol = QuestionType("symbol", ("What is the chemical symbol for {name}?",), "Which symbol stands for {name}?")
>>> [(r.question, r.held_out) for r in symbol.rows("element:Fe", "Fe", name="iron")]
[('What is the chemical symbol for iron?', False), ('Which symbol stands for iron?', True)]
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from plora.errors import DataError

MAX_ANSWER_WORDS = 12


class Row(NamedTuple):
    """One item as a builder yields it; :class:`~plora.data.qa.QA` objects are made only for the rows drawn."""

    question: str
    answer: str
    fact_id: str
    ask: str  # what is asked about the fact, whatever the wording: "symbol", "variant:A. 2d"
    held_out: bool  # the wording is never trained on: it asks trained facts to measure knowledge carried


@dataclass(frozen=True)
class QuestionType:
    """One thing asked about a fact, in the wordings a plasmid trains on and one wording held out from training.

    Answers to a held-out wording can only come from the fact, not from having seen the question: that is what
    the value-add experiment's *knowledge carried* question measures.
    """

    name: str
    trained: tuple[str, ...]
    held_out: str

    @property
    def wordings(self) -> tuple[str, ...]:
        return (*self.trained, self.held_out)

    def rows(self, fact_id: str, answer: str, ask: str | None = None, **slots: object) -> list[Row]:
        ask = ask or self.name
        out = [Row(w.format(**slots), answer, fact_id, ask, False) for w in self.trained]
        out.append(Row(self.held_out.format(**slots), answer, fact_id, ask, True))
        return out


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
