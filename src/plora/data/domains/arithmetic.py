"""Arithmetic facts, enumerated by plora itself: sums and differences of 0..99, products of 1..30.

    >>> from plora.data.domains.arithmetic import build
    >>> [row.question for row in build() if row.fact_id == "arith:12+30"][:2]
    ['What is 12 + 30?', 'What is the sum of 12 and 30?']

A fact is one operation on an unordered pair for ``+`` and ``*`` (so ``30 + 12`` is a wording of ``arith:12+30`` and
never leaks across splits) and an ordered pair ``a >= b`` for ``-`` (results stay non-negative). Each operation has
trained wordings and one held out from training (``QUESTION_TYPES``).
"""

from __future__ import annotations

from plora.data.domains._util import QuestionType, Row

ADD_MAX = 99
MUL_MAX = 30

ADD = QuestionType("sum", ("What is {x} + {y}?", "What is the sum of {x} and {y}?"), "How much is {x} plus {y}?")
SUB = QuestionType(
    "difference",
    ("What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}. What is left?"),
    "How much is left when you take {b} away from {a}?",
)
MUL = QuestionType("product", ("What is {x} * {y}?", "What is {x} times {y}?"), "What is the product of {x} and {y}?")
QUESTION_TYPES = (ADD, SUB, MUL)


def build() -> list[Row]:
    items: list[Row] = []
    for a in range(ADD_MAX + 1):
        for b in range(a, ADD_MAX + 1):
            for x, y in ((a, b), (b, a)) if a != b else ((a, b),):
                items += ADD.rows(f"arith:{a}+{b}", str(a + b), x=x, y=y)
    for a in range(ADD_MAX + 1):
        for b in range(a + 1):
            items += SUB.rows(f"arith:{a}-{b}", str(a - b), a=a, b=b)
    for a in range(1, MUL_MAX + 1):
        for b in range(a, MUL_MAX + 1):
            for x, y in ((a, b), (b, a)) if a != b else ((a, b),):
                items += MUL.rows(f"arith:{a}*{b}", str(a * b), x=x, y=y)
    return items
