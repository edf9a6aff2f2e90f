"""Arithmetic facts, enumerated by plora itself: sums and differences of 0..99, products of 1..30.

    >>> from plora.data.domains.arithmetic import build
    >>> [row for row in build() if row[2] == "arith:12+30"][0]
    ('What is 12 + 30?', '42', 'arith:12+30')

A fact is one operation on an unordered pair for ``+`` and ``*`` (so ``30 + 12`` is a phrasing of ``arith:12+30`` and
never leaks across splits) and an ordered pair ``a >= b`` for ``-`` (results stay non-negative).
"""

from __future__ import annotations

from plora.data.domains._util import Row

ADD_MAX = 99
MUL_MAX = 30


def build() -> list[Row]:
    items: list[Row] = []
    for a in range(ADD_MAX + 1):
        for b in range(a, ADD_MAX + 1):
            fact, ans = f"arith:{a}+{b}", str(a + b)
            for x, y in ((a, b), (b, a)) if a != b else ((a, b),):
                items.append((f"What is {x} + {y}?", ans, fact))
                items.append((f"What is the sum of {x} and {y}?", ans, fact))
    for a in range(ADD_MAX + 1):
        for b in range(a + 1):
            fact, ans = f"arith:{a}-{b}", str(a - b)
            items.append((f"What is {a} - {b}?", ans, fact))
            items.append((f"What is {a} minus {b}?", ans, fact))
            items.append((f"Subtract {b} from {a}. What is left?", ans, fact))
    for a in range(1, MUL_MAX + 1):
        for b in range(a, MUL_MAX + 1):
            fact, ans = f"arith:{a}*{b}", str(a * b)
            for x, y in ((a, b), (b, a)) if a != b else ((a, b),):
                items.append((f"What is {x} * {y}?", ans, fact))
                items.append((f"What is {x} times {y}?", ans, fact))
    return items
