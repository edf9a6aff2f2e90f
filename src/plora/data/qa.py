"""One question/answer item, tagged with the underlying fact it states and what it asks about that fact.

    >>> from plora.data.qa import QA
    >>> QA("What is 12 + 30?", "42", "arith:12+30", "arithmetic", "sum").fact_id
    'arith:12+30'

Several items (wordings) can share a ``fact_id`` and an ``ask``; splits are made over fact ids, never over items.
``ask`` is empty for items from files and hub sets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QA:
    question: str
    answer: str
    fact_id: str
    domain: str
    ask: str = ""  # what the question asks about the fact, whatever its wording ("sum", "variant:A. 2d")

    @property
    def statement(self) -> tuple[str, str]:
        """(fact, what is asked): two items with the same statement ask the same thing in different words."""
        return self.fact_id, self.ask
