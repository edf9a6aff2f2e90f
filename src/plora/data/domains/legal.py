"""Legal facts from the Free Law Project's ``reporters-db`` (case-law reporters) and ``courts-db`` (US courts).

    >>> from plora.data.domains.legal import build
    >>> [a for q, a, fact in build() if fact == "reporter:A.2d"][:1]
    ['Atlantic Reporter']

Facts: one per reporter edition (``reporter:A.2d``: full name, start/end year, kind, spelling variants) and one per
court (``court:casb``: name, id, citation abbreviation, location, type, system). Placeholder start years (1750, which
reporters-db uses for "unknown") are not asked.
"""

from __future__ import annotations

from typing import Any

from plora.data.domains._util import Row, short_enough

UNKNOWN_START_YEAR = 1750
MAX_VARIANTS_PER_EDITION = 3
_CITE_TYPES = {
    "state": "state",
    "federal": "federal",
    "specialty": "specialty",
    "neutral": "neutral citation",
    "scotus_early": "early Supreme Court",
    "state_regional": "regional",
    "specialty_lexis": "LexisNexis specialty",
    "specialty_west": "West specialty",
}
_COURT_TYPES = {"trial", "appellate", "special", "bankruptcy"}
_COURT_SYSTEMS = {"state", "federal", "tribal"}


def _reporter_items(reporters: dict[str, list[dict[str, Any]]]) -> list[Row]:
    items: list[Row] = []
    for key in sorted(reporters):
        for rep in reporters[key]:
            name = str(rep.get("name", "")).strip()
            kind = _CITE_TYPES.get(str(rep.get("cite_type", "")))
            editions: dict[str, dict[str, Any]] = rep.get("editions", {})
            for ed, span in sorted(editions.items()):
                fact = f"reporter:{ed}"
                if short_enough(name):
                    items.append((f"What reporter does the citation abbreviation '{ed}' refer to?", name, fact))
                    items.append((f"In legal citations, what does '{ed}' stand for?", name, fact))
                    if ed == key and len(editions) == 1:
                        items.append((f"What is the citation abbreviation of the {name}?", ed, fact))
                start, end = span.get("start"), span.get("end")
                if start is not None and start.year != UNKNOWN_START_YEAR:
                    items.append((f"In what year does the reporter '{ed}' begin?", str(start.year), fact))
                if end is not None:
                    items.append((f"In what year does the reporter '{ed}' end?", str(end.year), fact))
                if kind:
                    items.append((f"What kind of reporter is '{ed}'?", kind, fact))
            variants = sorted(v for v, ed in rep.get("variations", {}).items() if ed in editions)
            counts: dict[str, int] = {}
            for variant in variants:
                ed = rep["variations"][variant]
                if counts.get(ed, 0) >= MAX_VARIANTS_PER_EDITION:
                    continue
                counts[ed] = counts.get(ed, 0) + 1
                q = f"'{variant}' is a variant of which reporter abbreviation?"
                items.append((q, ed, f"reporter:{ed}"))
    return items


def _court_items(courts: list[dict[str, Any]]) -> list[Row]:
    items: list[Row] = []
    for court in sorted(courts, key=lambda c: c["id"]):
        cid, name = court["id"], str(court.get("name", "")).strip()
        if not short_enough(name):
            continue
        fact = f"court:{cid}"
        items.append((f"Which court has the court id '{cid}'?", name, fact))
        items.append((f"What is the court id of the {name}?", cid, fact))
        cite = str(court.get("citation_string") or "").strip()
        if cite:
            items.append((f"How is the {name} abbreviated in citations?", cite, fact))
        location = str(court.get("location") or "").strip()
        if short_enough(location):
            items.append((f"Where is the {name}?", location, fact))
        if court.get("type") in _COURT_TYPES:
            items.append((f"What type of court is the {name}?", court["type"], fact))
        if court.get("system") in _COURT_SYSTEMS:
            items.append((f"Is the {name} a state, federal or tribal court?", court["system"], fact))
    return items


def build() -> list[Row]:
    import courts_db
    import reporters_db

    return _reporter_items(reporters_db.REPORTERS) + _court_items(courts_db.courts)
