"""Output paths a command will write, checked before any expensive work, so nothing of the user's is lost.

    >>> from plora.outputs import check_output_dir
    >>> check_output_dir("out/legal", sources=["out/legal", "out/medical"])
    Traceback (most recent call last):
    plora.outputs.OutputError: --out out/legal overlaps the source out/legal; write the result to another folder

A plasmid is written to a staging folder and renamed over its output folder, which replaces that folder whole.
:func:`check_output_dir` allows that only when nothing but an earlier plasmid would be lost:

* never the working directory, one of its parents, or a folder that overlaps a source (``plora merge --out`` one
  of its own ``--plasmids``), whatever ``force`` says;
* an existing folder that holds only a plasmid's files (``plora.yml``, ``adapter_config.json``, its
  ``.safetensors`` artifact, signatures: :func:`plora.manifest.is_plasmid_file`) is replaced: re-running a command
  gives its new output;
* an existing folder holding anything else is refused unless ``force``; an existing file is always refused;
* the nearest existing parent must be a writable folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from plora.errors import PloraError
from plora.manifest import is_plasmid_file


class OutputError(PloraError):
    """An output path that would overwrite something it must not, or cannot be written."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or "/")


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output_dir(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    sources: Iterable[str | os.PathLike[str]] = (),
    flag: str = "--out",
    replaceable: Callable[[str], bool] = is_plasmid_file,
) -> Path:
    """Refuse an output folder that would lose data (see the module docstring); returns its absolute path.
    ``replaceable``: whether a file name is one an earlier output of the same command holds (default: a plasmid's)."""
    if not str(path).strip():
        raise OutputError(f"{flag} is empty")
    raw = Path(path).expanduser()
    target = raw.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputError(f"{flag} {path} is the working directory or one of its parents; name a new folder")
    for source in sources:
        src = Path(source).expanduser().resolve()
        if _overlaps(target, src):
            raise OutputError(f"{flag} {path} overlaps the source {source}; write the result to another folder")
    if raw.is_symlink() or (raw.exists() and not raw.is_dir()):
        raise OutputError(f"{flag} {path} exists and is not a folder")
    if raw.is_dir():
        try:
            entries = sorted(e.name + ("/" if e.is_dir() else "") for e in raw.iterdir())
        except OSError as err:
            raise OutputError(f"{flag} {path}: cannot read it ({err.strerror})") from None
        others = [e for e in entries if e.endswith("/") or not replaceable(e)]
        if others and not force:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise OutputError(
                f"{flag} {path} already holds {shown}; it would be replaced whole: choose a new folder or pass --force"
            )
    parent = _nearest_existing(target.parent)
    if not parent.is_dir() or not _can_create_in(parent):
        raise OutputError(f"{flag} {path}: cannot create it ({parent} is not a writable folder)")
    return target


def _can_create_in(folder: Path) -> bool:
    """Really try (os.access says yes to root, and to read-only or virtual file systems such as /proc)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".plora-probe-", dir=folder))
    except OSError:
        return False
    return True


def check_report_dir(path: str | os.PathLike[str], *, flag: str = "--report_dir") -> Path:
    """A folder that reports are added to (never emptied): an existing writable folder, or one that can be made."""
    if not str(path).strip():
        raise OutputError(f"{flag} is empty")
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {path} exists and is not a folder")
    parent = _nearest_existing(folder)
    if not parent.is_dir() or not _can_create_in(parent):
        raise OutputError(f"{flag} {path}: cannot write there ({parent} is not a writable folder)")
    return folder


def check_new_file(path: str | os.PathLike[str], *, flag: str = "--out") -> Path:
    """An output file whose folder exists, or can be made by creating that one folder (never a chain of them)."""
    if not str(path).strip():
        raise OutputError(f"{flag} is empty")
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputError(f"{flag} {path} is a folder; name a file")
    folder = target.parent
    if folder.exists():
        if not folder.is_dir():
            raise OutputError(f"{flag} {path}: {folder} is not a folder")
    elif not folder.parent.is_dir():
        raise OutputError(f"{flag} {path}: no such folder {folder.parent} (create it first)")
    writable = folder if folder.exists() else folder.parent
    if not _can_create_in(writable):
        raise OutputError(f"{flag} {path}: {writable} is not a writable folder")
    return target
