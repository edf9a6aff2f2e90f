"""Generated question/answer tasks that are none of the built-in domains: the custom-data plasmids of gate-eval.

    >>> from plora.experiments.gate_eval.tasks import TASKS, task_rows
    >>> sorted(TASKS)[:3]
    ['colors', 'http-status', 'mime']
    >>> task_rows("http-status")[0]
    ('What does HTTP status code 100 mean?', 'Continue', 'http:100')

A user who brings their own data trains from a ``.jsonl`` file; the cohort does the same: :func:`task_file` writes a
task once as ``{"question", "answer", "fact_id"}`` lines under ``PLORA_HOME/gate-eval/tasks/`` and the member is
trained with ``--domain <that file>``, through the same file loader and fact-hash split as any user file. Every task
is built from tables in the standard library or in packages plora already installs, deterministically, offline.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

Row = tuple[str, str, str]  # question, answer, fact id


def _http() -> list[Row]:
    import http

    rows: list[Row] = []
    for s in sorted(http.HTTPStatus, key=int):
        fact = f"http:{int(s)}"
        rows.append((f"What does HTTP status code {int(s)} mean?", s.phrase, fact))
        rows.append((f"Which HTTP status code means '{s.phrase}'?", str(int(s)), fact))
    return rows


def _mime() -> list[Row]:
    import mimetypes

    db = mimetypes.MimeTypes()  # the module's own table, not the machine's /etc/mime.types
    table = dict(sorted(db.types_map[True].items()))
    rows: list[Row] = []
    by_type: dict[str, list[str]] = {}
    for ext, mime in table.items():
        by_type.setdefault(mime, []).append(ext)
        rows.append((f"What is the MIME type of a {ext} file?", mime, f"mime:{ext}"))
    for mime, exts in sorted(by_type.items()):
        if len(exts) == 1:
            rows.append((f"Which file extension has the MIME type {mime}?", exts[0], f"mime:{exts[0]}"))
    return rows


def _unicode() -> list[Row]:
    import unicodedata

    rows: list[Row] = []
    for cp in [*range(0x00C0, 0x0250), *range(0x0370, 0x0400), *range(0x0400, 0x0460), *range(0x2190, 0x2200)]:
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        if not name or unicodedata.combining(ch):
            continue
        fact = f"unicode:{cp:04X}"
        rows.append((f"What is the Unicode name of the character '{ch}'?", name.title(), fact))
        rows.append((f"What is the code point of the character '{ch}'?", f"U+{cp:04X}", fact))
    return rows


def _colors() -> list[Row]:
    from matplotlib import colors

    rows: list[Row] = []
    table = {**{k: str(v) for k, v in colors.CSS4_COLORS.items()},
             **{k.removeprefix("xkcd:"): str(v) for k, v in colors.XKCD_COLORS.items()}}
    for name, hexcode in sorted(table.items()):
        rows.append((f"What is the hex code of the color {name}?", hexcode.lower(), f"color:{name}"))
    return rows


_SYLLABLES = ("ba", "ko", "ri", "tu", "mel", "dor", "vak", "sen", "li", "pra", "gu", "zo", "nek", "fa", "shi", "tro")


def _strings() -> list[Row]:
    rnd = random.Random(20261127)
    words = sorted({"".join(rnd.choice(_SYLLABLES) for _ in range(rnd.randint(2, 3))) for _ in range(1500)})
    rows: list[Row] = []
    for w in words:
        fact = f"word:{w}"
        rows.append((f"Reverse the letters of '{w}'.", w[::-1], fact))
        rows.append((f"Spell '{w}' in capital letters.", w.upper(), fact))
        rows.append((f"How many letters does '{w}' have?", str(len(w)), fact))
    return rows


def _weekday() -> list[Row]:
    rows: list[Row] = []
    day = dt.date(1990, 1, 1)
    while day < dt.date(2030, 1, 1):
        text = f"{day.day} {day.strftime('%B')} {day.year}"
        fact = f"date:{day.isoformat()}"
        rows.append((f"What day of the week was {text}?", day.strftime("%A"), fact))
        later = day + dt.timedelta(days=10)
        rows.append((f"What date is ten days after {text}?", f"{later.day} {later.strftime('%B')} {later.year}", fact))
        day += dt.timedelta(days=5)
    return rows


TASKS: dict[str, Callable[[], list[Row]]] = {
    "colors": _colors,
    "http-status": _http,
    "mime": _mime,
    "strings": _strings,
    "unicode": _unicode,
    "weekday": _weekday,
}


@functools.cache
def task_rows(name: str) -> tuple[Row, ...]:
    """Every row of a generated task, in a fixed order (unknown names raise KeyError)."""
    return tuple(TASKS[name]())


def task_digest(name: str) -> str:
    return hashlib.sha256(json.dumps(task_rows(name)).encode()).hexdigest()[:16]


def task_file(name: str) -> Path:
    """The task as a ``.jsonl`` file a user could have written (created once, content-addressed)."""
    from plora.fsio import atomic_write_text
    from plora.settings import cache_dir

    path = cache_dir("gate-eval", "tasks") / f"{name}-{task_digest(name)}.jsonl"
    if not path.is_file():
        lines = (json.dumps({"question": q, "answer": a, "fact_id": f}) for q, a, f in task_rows(name))
        atomic_write_text(path, "\n".join(lines) + "\n")
    return path
