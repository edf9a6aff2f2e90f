"""Does plora-tiny's pre-training corpus state a fact of a built-in domain? A mechanical check, in seconds.

    >>> from plora.data.overlap import CorpusIndex
    >>> index = CorpusIndex(["Counties of California include Alameda, Alpine and Los Angeles."])
    >>> index.documents_stating(subject=["los", "angeles"], answer=["california"])
    [0]

    $ python -m plora.data.overlap --write     # rebuild the corpus, list what it states (about 15 s)

An item is *stated* by a document when the document holds the item's answer (its words, contiguous) and every word
of the item's subject: the words of the question that its question type's wordings do not supply (``"Los Angeles
County Superior Court"`` minus the template's ``"where is the"``). Words are lower-case ``\\w+`` tokens, so case and
punctuation never hide a match. An inverted index (word -> documents) narrows each item to the few documents holding
all its words before the answer's contiguity is checked.

Deliberately strict: a document that lists the subject and the answer anywhere, however far apart, counts, so a
clean result means the base could not have read the fact in pre-training. What it finds is listed, per domain, in
``plora/data/domains/corpus_stated.json`` as ``fact_id|ask`` keys, and every wording of those is left out of the
domain; ``tests/test_data.py`` rebuilds the corpus and checks that no item left states a fact the corpus holds.
The corpus is rebuilt from this Python's standard-library docstrings, which change a little between versions: on
another Python, run ``--write`` again.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from plora.data.domains import (
    CORPUS_STATED_FILE,
    DOMAINS,
    candidate_rows,
    contains_words,
    question_types,
    statement_key,
    words,
)
from plora.data.domains._util import Row

_SLOT = re.compile(r"\{[^}]*\}")


class CorpusIndex:
    """Word -> documents, over lower-case word tokens."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.tokens = [words(doc) for doc in documents]
        self.postings: dict[str, set[int]] = defaultdict(set)
        for i, toks in enumerate(self.tokens):
            for tok in toks:
                self.postings[tok].add(i)

    def documents_stating(self, subject: Iterable[str], answer: list[str]) -> list[int]:
        """Documents that hold every subject word and the answer's words in a row."""
        needed = set(subject) | set(answer)
        if not answer or any(w not in self.postings for w in needed):
            return []
        docs = set.intersection(*(self.postings[w] for w in sorted(needed, key=lambda w: len(self.postings[w]))))
        return sorted(i for i in docs if contains_words(self.tokens[i], answer))


def template_words(domain: str) -> set[str]:
    """Words the domain's question wordings supply themselves (never part of an item's subject)."""
    return {w for qtype in question_types(domain) for text in qtype.wordings for w in words(_SLOT.sub(" ", text))}


def subject_words(row: Row, template: set[str]) -> list[str]:
    """The question's words that its wording does not supply: what the item is about."""
    return [w for w in dict.fromkeys(words(row.question)) if w not in template]


def stated_items(index: CorpusIndex, domain: str, rows: Iterable[Row]) -> list[tuple[Row, int]]:
    """``(row, first document stating it)`` for every row of ``domain`` the corpus states."""
    template = template_words(domain)
    found = []
    for row in rows:
        docs = index.documents_stating(subject_words(row, template), words(row.answer))
        if docs:
            found.append((row, docs[0]))
    return found


def stated_statements(documents: Sequence[str]) -> dict[str, list[str]]:
    """``{domain: sorted fact_id|ask keys}`` that ``documents`` state, over every candidate row of every domain."""
    index = CorpusIndex(documents)
    out = {}
    for domain in DOMAINS:
        stated = stated_items(index, domain, candidate_rows(domain))
        out[domain] = sorted({statement_key(row.fact_id, row.ask) for row, _ in stated})
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    from pathlib import Path

    from plora.data.corpus import build_corpus
    from plora.fsio import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m plora.data.overlap", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write domains/{CORPUS_STATED_FILE}")
    args = parser.parse_args(argv)
    found = stated_statements(build_corpus(seed=0))
    for domain, keys in found.items():
        print(f"{domain}: {len(keys)} statements the corpus holds")
    if args.write:
        path = Path(__file__).parent / "domains" / CORPUS_STATED_FILE
        atomic_write_text(path, json.dumps(found, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
