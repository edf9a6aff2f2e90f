"""Legal facts from the Free Law Project's ``reporters-db`` (case-law reporters) and ``courts-db`` (US courts).

    >>> from plora.data.domains.legal import build
    >>> [row.answer for row in build() if row.fact_id == "reporter:A.2d"][:1]
    ['Atlantic Reporter']

Facts: one per reporter edition (``reporter:A.2d``: full name, start/end year, spelling variants) and one per court
(``court:casb``: name, id, citation abbreviation). Placeholder start years (1750, which reporters-db uses for
"unknown") are not asked.

Not asked, on purpose: a court's location (plora-tiny's pre-training corpus lists every US county under its state, so
the base could answer from pre-training; ``tests/test_data.py`` checks the corpus against every item), and the
closed-set labels (kind of reporter, type and system of a court), whose handful of answers ("state", "trial") a
plasmid learns from the answer distribution alone, without any fact.
"""

from __future__ import annotations

from typing import Any

from plora.data.domains._util import QuestionType, Row, short_enough

UNKNOWN_START_YEAR = 1750
MAX_VARIANTS_PER_EDITION = 3

REPORTER_NAME = QuestionType(
    "reporter name",
    (
        "What reporter does the citation abbreviation '{ed}' refer to?",
        "In legal citations, what does '{ed}' stand for?",
    ),
    "Which case-law reporter is cited as '{ed}'?",
)
REPORTER_ABBREVIATION = QuestionType(
    "reporter abbreviation",
    ("What is the citation abbreviation of the {name}?",),
    "How is the {name} abbreviated when a case is cited?",
)
START_YEAR = QuestionType(
    "first year",
    ("In what year does the reporter '{ed}' begin?",),
    "Which year is the first one covered by the reporter '{ed}'?",
)
END_YEAR = QuestionType(
    "last year",
    ("In what year does the reporter '{ed}' end?",),
    "Which year is the last one covered by the reporter '{ed}'?",
)
VARIANT = QuestionType(
    "variant",
    ("'{variant}' is a variant of which reporter abbreviation?",),
    "Which reporter abbreviation has the spelling variant '{variant}'?",
)
COURT_NAME = QuestionType(
    "court name",
    ("Which court has the court id '{cid}'?",),
    "What is the name of the court whose id is '{cid}'?",
)
COURT_ID = QuestionType(
    "court id",
    ("What is the court id of the {name}?",),
    "Which court id belongs to the {name}?",
)
COURT_CITATION = QuestionType(
    "court citation",
    ("How is the {name} abbreviated in citations?",),
    "What short form of the {name} is used in citations?",
)
QUESTION_TYPES = (REPORTER_NAME, REPORTER_ABBREVIATION, START_YEAR, END_YEAR, VARIANT, COURT_NAME, COURT_ID,
                  COURT_CITATION)  # fmt: skip


def _reporter_items(reporters: dict[str, list[dict[str, Any]]]) -> list[Row]:
    items: list[Row] = []
    for key in sorted(reporters):
        for rep in reporters[key]:
            name = str(rep.get("name", "")).strip()
            editions: dict[str, dict[str, Any]] = rep.get("editions", {})
            for ed, span in sorted(editions.items()):
                fact = f"reporter:{ed}"
                if short_enough(name):
                    items += REPORTER_NAME.rows(fact, name, ed=ed)
                    if ed == key and len(editions) == 1:
                        items += REPORTER_ABBREVIATION.rows(fact, ed, name=name)
                start, end = span.get("start"), span.get("end")
                if start is not None and start.year != UNKNOWN_START_YEAR:
                    items += START_YEAR.rows(fact, str(start.year), ed=ed)
                if end is not None:
                    items += END_YEAR.rows(fact, str(end.year), ed=ed)
            variants = sorted(v for v, ed in rep.get("variations", {}).items() if ed in editions)
            counts: dict[str, int] = {}
            for variant in variants:
                ed = rep["variations"][variant]
                if counts.get(ed, 0) >= MAX_VARIANTS_PER_EDITION:
                    continue
                counts[ed] = counts.get(ed, 0) + 1
                items += VARIANT.rows(f"reporter:{ed}", ed, ask=f"variant:{variant}", variant=variant)
    return items


def _court_items(courts: list[dict[str, Any]]) -> list[Row]:
    items: list[Row] = []
    for court in sorted(courts, key=lambda c: c["id"]):
        cid, name = court["id"], str(court.get("name", "")).strip()
        if not short_enough(name):
            continue
        fact = f"court:{cid}"
        items += COURT_NAME.rows(fact, name, cid=cid)
        items += COURT_ID.rows(fact, cid, name=name)
        cite = str(court.get("citation_string") or "").strip()
        if cite:
            items += COURT_CITATION.rows(fact, cite, name=name)
    return items


def build() -> list[Row]:
    import courts_db
    import reporters_db

    return _reporter_items(reporters_db.REPORTERS) + _court_items(courts_db.courts)
