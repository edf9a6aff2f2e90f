"""Built-in domains: question/answer items generated from real tables, split 80/10/10 over facts.

    >>> from plora.data.domains import DOMAINS, domain_items, domain_info
    >>> DOMAINS
    ('arithmetic', 'legal', 'medical', 'science')
    >>> domain_info("legal").short_answers
    True
    >>> len(domain_items("science", "dev")) >= 256
    True

Each domain's table is built once per process (``functools.lru_cache``) in well under a second; builders yield plain
``(question, answer, fact_id)`` rows and :class:`~plora.data.qa.QA` objects are made only for what a caller draws.
Questions that would be ambiguous (the same text with two answers, or asked about two facts) are dropped, so no question
text is shared between splits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from plora.data.domains import arithmetic, legal, medical, science
from plora.data.domains._util import Row, dist_version
from plora.data.qa import QA
from plora.data.splits import SPLITS, normalize_split, partition
from plora.errors import DataError

DOMAINS = ("arithmetic", "legal", "medical", "science")


@dataclass(frozen=True)
class DomainInfo:
    name: str
    description: str
    short_answers: bool  # exact match by greedy decoding is meaningful for this domain's answers
    source: str  # where the facts come from, with package and version


_BUILDERS: dict[str, Callable[[], list[Row]]] = {
    "arithmetic": arithmetic.build,
    "legal": legal.build,
    "medical": medical.build,
    "science": science.build,
}


def unknown_source_message(name: str) -> str:
    return f"unknown domain '{name}' (built-in: {', '.join(DOMAINS)}; or a .jsonl/.csv/.parquet file or hub:<id>)"


def domain_info(name: str) -> DomainInfo:
    """What a built-in domain holds and where its facts come from."""
    if name == "arithmetic":
        return DomainInfo(
            name,
            "sums and differences of 0..99 and products of 1..30, several phrasings each",
            True,
            "plora's own enumeration (src/plora/data/domains/arithmetic.py)",
        )
    if name == "legal":
        return DomainInfo(
            name,
            "US case-law reporters (abbreviation, name, years, kind, variants) and courts (id, name, citation, place)",
            True,
            f"Free Law Project reporters-db {dist_version('reporters-db')} and courts-db {dist_version('courts-db')}",
        )
    if name == "medical":
        return DomainInfo(
            name,
            "ICD-10-CM billable codes: description, code for a description, block and chapter",
            False,
            f"ICD-10-CM tabular list (CMS) as shipped by simple-icd-10-cm {dist_version('simple-icd-10-cm')}",
        )
    if name == "science":
        return DomainInfo(
            name,
            "elements (symbol, name, number, atomic weight), isotopes (neutrons, abundance), unit conversions",
            True,
            f"periodictable {dist_version('periodictable')}; conversions computed by pint {dist_version('pint')}",
        )
    raise DataError(unknown_source_message(name))


def _unambiguous(rows: list[Row]) -> list[Row]:
    """Keep each question text once, and only if every occurrence has the same answer and fact."""
    seen: dict[str, tuple[str, str] | None] = {}
    for q, a, fact in rows:
        prev = seen.setdefault(q, (a, fact))
        if prev is not None and prev != (a, fact):
            seen[q] = None
    out = []
    for row in rows:
        if seen.get(row[0]) is not None and row[1].strip():
            out.append(row)
            del seen[row[0]]  # later exact duplicates are dropped
    return out


@functools.cache
def domain_rows(name: str) -> dict[str, tuple[Row, ...]]:
    """``{split: rows}`` for a built-in domain, in the table's fixed order (built once per process)."""
    if name not in _BUILDERS:
        raise DataError(unknown_source_message(name))
    parts = partition(_unambiguous(_BUILDERS[name]()), key=lambda row: row[2])
    return {split: tuple(parts[split]) for split in SPLITS}


def domain_items(name: str, split: str = "train") -> tuple[QA, ...]:
    """Every item of a built-in domain's split, in the table's fixed order (``load_examples`` draws from these)."""
    return _items(name, normalize_split(split))


@functools.cache
def _items(name: str, split: str) -> tuple[QA, ...]:
    return tuple(QA(q, a, fact, name) for q, a, fact in domain_rows(name)[split])


def domain_stats(name: str) -> dict[str, dict[str, int]]:
    """``{split: {"facts": n, "items": n}}`` for a built-in domain."""
    return {
        split: {"facts": len({row[2] for row in rows}), "items": len(rows)} for split, rows in domain_rows(name).items()
    }
