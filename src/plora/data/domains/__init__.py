"""Built-in domains: question/answer items generated from real tables, split over facts.

    >>> from plora.data.domains import DOMAINS, domain_items, domain_info
    >>> DOMAINS
    ('arithmetic', 'legal', 'medical', 'science')
    >>> domain_info("legal").short_answers
    True
    >>> len(domain_items("science", "dev")) >= 256
    True

Each domain's table is built once per process (``functools.cache``) in well under a second; builders yield plain
:class:`~plora.data.domains._util.Row` tuples and :class:`~plora.data.qa.QA` objects are made only for what a caller
draws. Every question type of a domain (``question_types``) has trained wordings and one held out from training; the
splits (``plora.data.splits``) are train/dev/test over facts, plus ``paraphrase`` (train facts in the held-out
wording) and ``calibration`` (half of the test facts).

Dropped while building: questions that would be ambiguous (the same text with two answers, or asked about two facts),
so no question text is shared between splits; questions that contain their own answer (``What is 5 + 0?``,
``'A. 2d' is a variant of which reporter abbreviation?``), which measure copying, not knowledge; and every wording of
what plora-tiny's pre-training corpus states (``corpus_stated.json``, made and checked by :mod:`plora.data.overlap`:
``'NV'`` is Nevada's postal code there and a reporter abbreviation here).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plora.data.domains import arithmetic, legal, medical, science
from plora.data.domains._util import QuestionType, Row, dist_version
from plora.data.qa import QA
from plora.data.splits import BUILTIN_SPLITS, builtin_split_of, normalize_split
from plora.errors import DataError

DOMAINS = ("arithmetic", "legal", "medical", "science")
CORPUS_STATED_FILE = "corpus_stated.json"


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


_QUESTION_TYPES: dict[str, tuple[QuestionType, ...]] = {
    "arithmetic": arithmetic.QUESTION_TYPES,
    "legal": legal.QUESTION_TYPES,
    "medical": medical.QUESTION_TYPES,
    "science": science.QUESTION_TYPES,
}
_WORD = re.compile(r"\w+")


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
            "US case-law reporters (abbreviation, name, first and last year, variants) and courts (id, name, citation)",
            True,
            f"Free Law Project reporters-db {dist_version('reporters-db')} and courts-db {dist_version('courts-db')}",
        )
    if name == "medical":
        return DomainInfo(
            name,
            "ICD-10-CM billable codes: description, code for a description, block",
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


def question_types(name: str) -> tuple[QuestionType, ...]:
    """What a built-in domain asks, each with its trained wordings and the one held out from training."""
    if name not in _QUESTION_TYPES:
        raise DataError(unknown_source_message(name))
    return _QUESTION_TYPES[name]


def words(text: str) -> list[str]:
    """Lower-case word tokens: what "a text contains an answer" is judged on (punctuation and case ignored)."""
    return _WORD.findall(text.lower())


def contains_words(text: list[str], part: list[str]) -> bool:
    """Does the token list ``part`` occur, contiguous, in ``text``?"""
    n = len(part)
    return n > 0 and any(text[i : i + n] == part for i in range(len(text) - n + 1))


def answer_in_question(row: Row) -> bool:
    part = words(row.answer)
    # every word of the question is a substring of its lower-cased text: most rows fail this cheap test
    if not part or part[0] not in row.question.lower():
        return False
    return contains_words(words(row.question), part)


def _unambiguous(rows: list[Row]) -> list[Row]:
    """Keep each question text once, and only if every occurrence has the same answer and fact."""
    seen: dict[str, tuple[str, str] | None] = {}
    for row in rows:
        prev = seen.setdefault(row.question, (row.answer, row.fact_id))
        if prev is not None and prev != (row.answer, row.fact_id):
            seen[row.question] = None
    out = []
    for row in rows:
        if seen.get(row.question) is not None and row.answer.strip():
            out.append(row)
            del seen[row.question]  # later exact duplicates are dropped
    return out


@functools.cache
def candidate_rows(name: str) -> tuple[Row, ...]:
    """Every row a builder makes, less the ambiguous ones and those containing their answer (before the corpus)."""
    if name not in _BUILDERS:
        raise DataError(unknown_source_message(name))
    return tuple(row for row in _unambiguous(_BUILDERS[name]()) if not answer_in_question(row))


@functools.cache
def corpus_stated() -> dict[str, frozenset[str]]:
    """``{domain: {"fact_id|ask"}}``: what plora-tiny's pre-training corpus states (``plora.data.overlap``)."""
    raw = json.loads((Path(__file__).parent / CORPUS_STATED_FILE).read_text(encoding="utf-8"))
    return {domain: frozenset(keys) for domain, keys in raw.items()}


def statement_key(fact_id: str, ask: str) -> str:
    return f"{fact_id}|{ask}"


@functools.cache
def domain_rows(name: str) -> dict[str, tuple[Row, ...]]:
    """``{split: rows}`` for a built-in domain, in the table's fixed order (built once per process)."""
    stated = corpus_stated().get(name, frozenset())
    parts: dict[str, list[Row]] = {s: [] for s in BUILTIN_SPLITS}
    for row in candidate_rows(name):
        if statement_key(row.fact_id, row.ask) not in stated:
            parts[builtin_split_of(row.fact_id, row.held_out)].append(row)
    return {split: tuple(rows) for split, rows in parts.items()}


def domain_digest(name: str) -> str:
    """SHA-256 over every row of a built-in domain: changes whenever its items or splits change."""
    h = hashlib.sha256()
    for split, rows in domain_rows(name).items():
        for row in rows:
            h.update("\x1f".join((split, *map(str, row))).encode("utf-8") + b"\x1e")
    return h.hexdigest()


def domain_items(name: str, split: str = "train") -> tuple[QA, ...]:
    """Every item of a built-in domain's split, in the table's fixed order (``load_examples`` draws from these)."""
    return _items(name, normalize_split(split))


@functools.cache
def _items(name: str, split: str) -> tuple[QA, ...]:
    return tuple(QA(row.question, row.answer, row.fact_id, name, row.ask) for row in domain_rows(name)[split])


def domain_stats(name: str) -> dict[str, dict[str, int]]:
    """``{split: {"facts": n, "items": n}}`` for a built-in domain."""
    return {
        split: {"facts": len({row.fact_id for row in rows}), "items": len(rows)}
        for split, rows in domain_rows(name).items()
    }
