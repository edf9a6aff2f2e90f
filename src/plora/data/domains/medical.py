"""Medical facts from ICD-10-CM, read from the data files that ``simple-icd-10-cm`` ships.

    >>> from plora.data.domains.medical import build
    >>> [row.answer for row in build() if row.fact_id == "icd:G11.0"][:1]
    ['Congenital nonprogressive ataxia']

One fact per billable code that has its own description in the tabular list (leaves of the code list; the 7th-character
extensions, whose descriptions are long composites, are left out) and whose description has at most 12 words. Each fact
is asked as code -> description, description -> code and code -> block, each in trained wordings and one held out
from training (``QUESTION_TYPES``). Code -> chapter is not asked: 21 chapters are a closed set of labels that a
plasmid learns from the answer distribution alone.

The package's own import parses the whole XML into a tree (about 3 s here); reading its two data files with a regex
takes a fraction of that, so the files are read directly and the package is never imported.
"""

from __future__ import annotations

import bisect
import html
import re
from pathlib import Path

from plora.data.domains._util import QuestionType, Row, package_dir, short_enough
from plora.errors import DataError

MAX_DESCRIPTION_WORDS = 10

DESCRIPTION = QuestionType(
    "description",
    ("What condition does ICD-10-CM code {code} describe?", "What does the ICD-10-CM code {code} stand for?"),
    "Which diagnosis is coded {code} in ICD-10-CM?",
)
CODE = QuestionType(
    "code",
    ("What is the ICD-10-CM code for {desc}?",),
    "Which ICD-10-CM code is assigned to {desc}?",
)
BLOCK = QuestionType(
    "block",
    ("Which ICD-10-CM block contains code {code}?",),
    "In which block of ICD-10-CM is the code {code}?",
)
QUESTION_TYPES = (DESCRIPTION, CODE, BLOCK)

_DIAG = re.compile(r"<diag>\s*<name>([^<]+)</name>\s*<desc>([^<]+)</desc>")
_SECTION = re.compile(r'<section id="[^"]+">\s*<desc>([^<]+)</desc>')
_RANGE_SUFFIX = re.compile(r"\s*\([A-Z0-9.\-, ]+\)\s*$")


def data_files() -> tuple[Path, Path]:
    """(tabular XML, code list) inside the installed package."""
    folder = package_dir("simple_icd_10_cm") / "data"
    xmls = sorted(folder.glob("*tabular*.xml"))
    lists = sorted(folder.glob("code-list*.txt"))
    if not xmls or not lists:
        raise DataError(f"simple-icd-10-cm data files not found in {folder}")
    return xmls[-1], lists[-1]


def _leaf_codes(code_list: str) -> set[str]:
    # The list is in depth-first order: a code has children iff the next line extends it.
    codes = code_list.split()
    return {c for c, nxt in zip(codes, codes[1:] + [""], strict=True) if not nxt.startswith(c)}


def _headings(pattern: re.Pattern[str], text: str) -> tuple[list[int], list[str]]:
    starts, names = [], []
    for m in pattern.finditer(text):
        starts.append(m.start())
        names.append(_RANGE_SUFFIX.sub("", html.unescape(m.group(1)).strip()))
    return starts, names


def _enclosing(starts: list[int], names: list[str], pos: int) -> str:
    i = bisect.bisect_right(starts, pos) - 1
    return names[i] if i >= 0 else ""


def build() -> list[Row]:
    xml_path, list_path = data_files()
    text = xml_path.read_text(encoding="utf-8")
    leaves = _leaf_codes(list_path.read_text(encoding="utf-8"))
    sections = _headings(_SECTION, text)
    items: list[Row] = []
    for m in _DIAG.finditer(text):
        code, desc = m.group(1).strip(), html.unescape(m.group(2)).strip()
        if code.replace(".", "") not in leaves or not short_enough(desc, MAX_DESCRIPTION_WORDS):
            continue
        fact = f"icd:{code}"
        items += DESCRIPTION.rows(fact, desc, code=code)
        items += CODE.rows(fact, code, desc=desc)
        block = _enclosing(*sections, m.start())
        if short_enough(block):
            items += BLOCK.rows(fact, block, code=code)
    return items
