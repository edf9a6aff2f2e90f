"""Crash-safe file writes: temp file in the same folder, fsync, rename. Readers never see a partial file. And bounded
reads of files a user names (:func:`read_bounded`): a FIFO, a device or a huge file never blocks or floods memory.

    >>> import json
    >>> from plora.fsio import atomic_write_json, file_lock
    >>> atomic_write_json("out/report.json", {"ok": True})
    PosixPath('out/report.json')
    >>> with file_lock("out/report.lock"):          # another process taking this lock waits here
    ...     json.loads(open("out/report.json").read())
    {'ok': True}
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str,
                 error: type[Exception] = OSError) -> bytes:
    """The bytes of the regular file ``path`` (links followed), at most ``max_bytes``; otherwise ``error`` with one
    line naming ``what`` the file should be. Opening never waits on a FIFO, and a device or FIFO is never read."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{p}: cannot read {what} (no such file)") from None
    except OSError as err:
        raise error(f"{p}: cannot read {what} ({err.strerror or err})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{p}: not a regular file (expected {what})")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise error(f"{p}: cannot read {what} ({err.strerror or err})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{p}: more than {max_bytes} bytes, too large for {what}")
    return data


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp")


def dead_temp_of(name: str) -> str | None:
    """The file name that ``name`` was a temporary file of, when it is one :func:`atomic_write_bytes` made (beside
    it: ``.<name>.<pid>-XXXX.tmp``) in a process that has died (killed before its rename); None otherwise."""
    m = _TEMP_NAME.fullmatch(name)
    if m is None or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
        return None
    return m["name"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: done once, at import
    os.umask(mask)
    return mask


# mkdtemp makes 0700 folders; a finished folder (a plasmid, a converted base) should read like any other
FOLDER_MODE = 0o755 & ~_umask()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(parent: str | os.PathLike[str], prefix: str) -> int:
    """Remove the folders ``parent/<prefix><pid>-*`` whose process has died (killed before it could clean up)."""
    removed = 0
    with contextlib.suppress(OSError):
        for child in Path(parent).iterdir():
            if child.name.startswith(prefix) and child.is_dir() and not child.is_symlink():
                pid = child.name[len(prefix):].split("-", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                    shutil.rmtree(child, ignore_errors=True)
                    removed += 1
    return removed


def process_temp_dir(prefix: str, parent: str | os.PathLike[str] | None = None) -> Path:
    """A new folder ``<prefix><pid>-XXXX`` in ``parent`` (default: the system's temp folder), after removing the
    folders of that prefix left by dead processes: a run killed with SIGKILL leaves nothing behind for long."""
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    remove_orphans(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


@functools.cache
def _renameat2() -> Any:
    import ctypes  # only when a folder is replaced: 2 ms off every start-up that imports fsio

    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap the entries ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system or
    the filesystem cannot, OSError when either is missing."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = _renameat2()
    if renameat2 is None:  # a libc before glibc 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(new: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path | None:
    """Move the folder ``new`` to ``final``, on one filesystem. An existing ``final`` is swapped with ``new`` in one
    step, so ``final`` names the old folder or the new one at every instant, even if the process is killed; the old
    folder is then at ``new``'s path, returned for the caller to remove. None when nothing was at ``final``.

    Where the swap is not available (not Linux, or a filesystem without ``RENAME_EXCHANGE``), two renames: the old
    folder goes to ``<new>.old`` first, and ``final`` is missing between the two."""
    new, final = Path(new), Path(final)
    for _ in range(3):  # another process may create or remove ``final`` between our attempts
        try:
            os.rename(new, final)  # replaces nothing but an empty folder
            return None
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        try:
            if _rename_exchange(new, final):
                return new
        except FileNotFoundError:
            continue
        old = new.with_name(f"{new.name}.old")
        os.replace(final, old)
        os.replace(new, final)
        return old
    raise OSError(errno.EBUSY, f"{final} keeps changing; not replaced", str(final))


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Build a folder beside ``final`` and move it into place only if the block succeeds.

    On success the staged folder replaces ``final`` through :func:`replace_dir` (``final`` is never missing, even if
    the process is killed, and the old folder is removed afterwards); on failure the staged folder is deleted and
    ``final`` is untouched. Staged folders of processes that died (``.<name>.staging-<pid>-*``) are removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = process_temp_dir(f".{final.name}.staging-", final.parent)
    try:
        os.chmod(stage, FOLDER_MODE)
        yield stage
        for child in stage.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(stage)
        if not overwrite and final.exists():
            raise FileExistsError(f"{final} already exists")
        old = replace_dir(stage, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``path`` for the block; other processes wait."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the folder itself for the block (other processes wait): no lock file is left in
    a folder whose files are signed, served or shipped."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
