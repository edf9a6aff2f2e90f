"""One question/answer item, tagged with the underlying fact it states.

    >>> from plora.data.qa import QA
    >>> QA("What is 12 + 30?", "42", "arith:12+30", "arithmetic").fact_id
    'arith:12+30'

Several items (phrasings) can share a ``fact_id``; splits are made over fact ids, never over items.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QA:
    question: str
    answer: str
    fact_id: str
    domain: str
