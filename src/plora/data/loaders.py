"""Load question/answer items from a built-in domain, a local jsonl/csv/parquet file, or a hub dataset.

    >>> from plora.data.loaders import load_examples, dataset_id
    >>> items = load_examples("legal", split="train", samples=64, seed=41)
    >>> len(items), dataset_id("legal")
    (64, 'builtin:legal')

``source`` is one of: a built-in domain (``arithmetic``, ``legal``, ``medical``, ``science``); a local ``.jsonl``,
``.csv`` or ``.parquet`` file; ``hub:<owner>/<name>`` (or a bare ``owner/name`` that is not a local path), loaded with
``datasets.load_dataset``. Items come back in a seeded random order, cut to ``samples``: the same arguments give the
same list in the same order.

Splits of built-in domains: ``train``, ``dev``, ``test`` over facts, plus ``paraphrase`` (train facts asked in the
wording held out from training) and ``calibration`` (half of the test facts); see :mod:`plora.data.splits`.

Splits of files and hub sets: a ``split`` column (train/dev/test, or paraphrase/calibration; validation, val and eval
mean dev) is honoured;
otherwise each row goes to train/dev/test (80/10/10) by hashing its ``fact_id`` column if there is one, else its
question text, so the splits are disjoint and stable. A hub dataset with two or more of train/validation/test keeps
its own splits; ``hub_split`` loads one hub split and hash-splits it.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plora.data.domains import DOMAINS, domain_rows, unknown_source_message
from plora.data.qa import QA
from plora.data.splits import BUILTIN_SPLITS, SPLITS, draw, normalize_split, split_of
from plora.errors import DataError

FILE_SUFFIXES = (".jsonl", ".csv", ".parquet")
MAX_FIELD_CHARS = 131072  # the csv module's default field_size_limit: one cap on a value for every format
MAX_LINE_BYTES = 1 << 20  # a JSONL line: a question, an answer and a few short fields, escapes included
# a whole file: rows are held as Python objects (5-10x the bytes), so 2 GiB is what this kind of machine can parse
MAX_FILE_BYTES = 2 << 30
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _classify(source: str) -> tuple[str, str]:
    """``("builtin" | "file" | "hub", value)`` for a source string; unknown names raise DataError."""
    src = str(source).strip()
    if src.startswith("hub:"):
        hub_id = src[4:].strip()
        if not hub_id:
            raise DataError("empty hub dataset id: use hub:<owner>/<name>")
        return "hub", hub_id
    if src.startswith("builtin:"):
        src = src[len("builtin:") :]
        if src not in DOMAINS:
            raise DataError(unknown_source_message(src))
    if src in DOMAINS:
        return "builtin", src
    if src.startswith("file:"):
        return "file", src[5:]
    path = Path(src).expanduser()
    if path.exists() or path.suffix.lower() in FILE_SUFFIXES or src.startswith((".", "/", "~")):
        return "file", src
    if _HUB_ID.match(src):
        return "hub", src
    raise DataError(unknown_source_message(src))


def dataset_id(source: str) -> str:
    """What a manifest records: ``builtin:legal``, ``file:<basename>`` or ``hub:<id>``."""
    kind, value = _classify(source)
    return f"{kind}:{Path(value).name}" if kind == "file" else f"{kind}:{value}"


def local_file(source: str) -> Path | None:
    """The local file ``source`` names, or None for a built-in domain or a hub dataset (an output must not overlap
    it: :func:`plora.outputs.check_output_dir`'s ``sources``)."""
    kind, value = _classify(source)
    return Path(value).expanduser() if kind == "file" else None


def load_examples(
    source: str,
    split: str = "train",
    samples: int | None = None,
    seed: int = 0,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    hub_split: str | None = None,
) -> list[QA]:
    """Items of ``split`` from ``source``, in a seeded random order, at most ``samples`` of them.

    The caller applies PLORA_SAMPLES (``plora.settings.effective_samples``) before passing ``samples``. Raises
    :class:`plora.errors.DataError` (one line) for an unknown domain, a missing or unreadable file, a missing field,
    a hub set that cannot be loaded (for example offline), or an empty split.
    """
    split = normalize_split(split)
    kind, value = _classify(source)
    question_field = question_field or "question"
    answer_field = answer_field or "answer"
    if kind == "builtin":
        rows = draw(domain_rows(value)[split], samples, seed)
        return [QA(row.question, row.answer, row.fact_id, value, row.ask) for row in rows]
    if kind == "file":
        table = _file_table(*_file_key(value), question_field, answer_field)
        name = f"file {Path(value).name}"
    else:
        table = _hub_table(value, hub_split, question_field, answer_field)
        name = f"hub:{value}"
    items = table[split]
    if not items:
        sizes = ", ".join(f"{s} {len(table[s])}" for s in BUILTIN_SPLITS if table[s] or s in SPLITS)
        raise DataError(f"{name} has no '{split}' items (split sizes: {sizes})")
    return draw(items, samples, seed)


def _file_key(value: str) -> tuple[str, int, int]:
    path = Path(value).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "is not a regular file" if path.exists() else "not found"
        raise DataError(f"dataset file {value} {what} (expected a .jsonl, .csv or .parquet file)")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise DataError(f"unsupported dataset file type '{path.suffix}' for {value} (use .jsonl, .csv or .parquet)")
    stat = path.stat()
    if stat.st_size > MAX_FILE_BYTES:
        raise DataError(f"dataset file {value} has {stat.st_size} bytes, more than {MAX_FILE_BYTES >> 30} GiB: "
                        "train on a sample of it (a plasmid uses at most --samples items)")
    # mtime and size in the cache key: an edited file is read again.
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=32)
def _file_table(path_str: str, _mtime: int, _size: int, qf: str, af: str) -> dict[str, tuple[QA, ...]]:
    path = Path(path_str)
    suffix = path.suffix.lower()
    try:
        lines: list[int] | None = None
        if suffix == ".jsonl":
            records, lines = _read_jsonl(path)
        elif suffix == ".csv":
            records, lines = _read_csv(path)
        else:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            records = pq.read_table(path).to_pylist()
    except DataError:
        raise
    except Exception as exc:  # a corrupt file of any format: say which file and why, in one line
        raise DataError(f"cannot read {path.name}: {_one_line(exc)}") from None
    return _table_from_records(records, qf, af, where=path.name, domain=path.stem, lines=lines)


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows and their line numbers."""
    records, lines = [], []
    with path.open("rb") as fh:
        for lineno in itertools.count(1):
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{path.name} line {lineno} is longer than {MAX_LINE_BYTES} bytes (1 MiB)")
            try:  # a BOM is accepted at the start, as for CSV
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path.name} line {lineno} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, ValueError) as exc:  # ValueError: an integer of over 4300 digits
                raise DataError(f"{path.name} line {lineno} is not JSON ({getattr(exc, 'msg', exc)})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path.name} line {lineno} is not a JSON object")
            for key, value in record.items():
                _check_text(key, f"{path.name} line {lineno}: a field name")
                if isinstance(value, str):
                    _check_text(value, f"{path.name} line {lineno} field '{key}'")
            records.append(record)
            lines.append(lineno)
    return records, lines


def _read_csv(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows and the line each starts on (a quoted field may span lines)."""
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        start = 1
        try:
            if reader.fieldnames is None:  # reads the header; an empty file has none
                return records, lines
            start = reader.line_num + 1
            for record in reader:
                records.append(record)
                lines.append(start)
                start = reader.line_num + 1
        except csv.Error as exc:  # a field over MAX_FIELD_CHARS among them
            raise DataError(f"{path.name} line {start}: {_one_line(exc)}") from None
    return records, lines


def _check_text(value: str, where: str) -> str:
    """``value`` unless it is longer than a CSV field may be or is not valid Unicode (a lone surrogate)."""
    if len(value) > MAX_FIELD_CHARS:
        raise DataError(f"{where} is longer than {MAX_FIELD_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{where} is not valid Unicode (lone surrogate at character {exc.start})") from None
    return value


def _table_from_records(
    records: Iterable[dict[str, Any]],
    qf: str,
    af: str,
    *,
    where: str,
    domain: str,
    honour_split: bool = True,
    lines: list[int] | None = None,
) -> dict[str, tuple[QA, ...]]:
    """Items by split; ``lines``: each record's line in the file, for messages (else its row number)."""
    records = list(records)
    if not records:
        raise DataError(f"{where} holds no rows")
    fields = set().union(*(r.keys() for r in records))
    for role, field in (("question", qf), ("answer", af)):
        if field not in fields:
            shown = ", ".join(sorted(map(str, fields))[:12])
            raise DataError(
                f"{where} has no {role} field '{field}' (fields: {shown}); map it with --{role}-field / {role}_field="
            )
    out: dict[str, list[QA]] = {s: [] for s in BUILTIN_SPLITS}
    for row, r in enumerate(records, 1):
        at = f"line {lines[row - 1]}" if lines else f"row {row}"
        question, answer = (_field_text(r.get(f), f"{where} {at} field '{f}'") for f in (qf, af))
        if not question or not answer:
            continue  # rows with an empty question or answer teach nothing
        fact = _text(r.get("fact_id")) or f"q:{hashlib.sha256(question.encode('utf-8')).hexdigest()[:16]}"
        declared = _field_text(r.get("split"), f"{where} {at} field 'split'") if honour_split else ""
        try:
            split = normalize_split(declared) if declared else split_of(fact)
        except DataError as err:
            raise DataError(f"{where} {at}: {err}") from None
        out[split].append(QA(question, answer, fact, _text(r.get("domain")) or domain))
    if not any(out.values()):
        raise DataError(f"{where} has no rows with both a '{qf}' and an '{af}' value")
    return {s: tuple(items) for s, items in out.items()}


def _field_text(value: Any, where: str) -> str:
    """A question or answer as text: a string, or a finite number written out; anything else is refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where} is {value}, not text")
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
        raise DataError(f"{where} is a {type(value).__name__}, not text")
    return _check_text(_text(value), where)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=8)
def _hub_table(hub_id: str, hub_split: str | None, qf: str, af: str) -> dict[str, tuple[QA, ...]]:
    try:
        import datasets

        loaded = datasets.load_dataset(hub_id, split=hub_split) if hub_split else datasets.load_dataset(hub_id)
    except Exception as exc:  # offline, unknown id, bad split: all end the same way for the user
        raise DataError(
            f"cannot load hub dataset '{hub_id}' ({type(exc).__name__}: {_one_line(exc, 120)}); "
            "if offline, save it as a local .jsonl/.csv/.parquet file and pass its path"
        ) from None
    parts = {hub_split: loaded} if hub_split else dict(loaded)
    ours = {name: _hub_split_name(name) for name in parts}
    keep_splits = hub_split is None and len({s for s in ours.values() if s}) >= 2
    records: list[dict[str, Any]] = []
    for name, ds in parts.items():
        missing = [f for f in (qf, af) if f not in ds.column_names]
        if missing:
            raise DataError(
                f"hub:{hub_id} split '{name}' has no field '{missing[0]}' (fields: {', '.join(ds.column_names[:12])}); "
                "map it with --question-field / --answer-field"
            )
        cols = [c for c in (qf, af, "fact_id", "domain") if c in ds.column_names]
        rows = ds.select_columns(cols).to_list()
        if keep_splits:
            if not ours[name]:
                continue  # a hub split outside train/dev/test (e.g. "unsupervised") is not drawn from
            rows = [{**row, "split": ours[name]} for row in rows]
        records.extend(rows)
    return _table_from_records(
        records, qf, af, where=f"hub:{hub_id}", domain=hub_id.rsplit("/", 1)[-1], honour_split=keep_splits
    )


def _hub_split_name(name: str) -> str:
    try:
        return normalize_split(name)
    except DataError:
        return ""
