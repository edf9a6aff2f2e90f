"""Open a file under a served root without leaving it: no symlink is followed, only regular files are read.

    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "legal").mkdir(); _ = (root / "legal" / "plora.yml").write_text("id: legal")
    >>> read_under(root, ("legal",), "plora.yml", max_bytes=1024)
    b'id: legal'
    >>> (root / "legal" / "zero").symlink_to("/dev/zero")
    >>> read_under(root, ("legal",), "zero", max_bytes=1024)
    Traceback (most recent call last):
    ...
    plora.errors.TransferError: legal/zero: a symbolic link (not served)

Every component below the root is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a folder or
file swapped for a symlink between the index's scan and the read cannot redirect it, and the final ``fstat`` is of
the very file that will be read: a FIFO, a device or a socket is refused before a byte is read (the open is
non-blocking, so a FIFO cannot hang the server either). The size comes from that ``fstat`` and is checked against
the caller's limit before anything is read, and no read goes past it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from plora.errors import TransferError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _refusal(where: str, err: OSError) -> TransferError:
    if err.errno in {errno.ELOOP, errno.ENOTDIR}:
        return TransferError(f"{where}: a symbolic link (not served)")
    return TransferError(f"{where}: cannot open ({err.strerror or err})")


def open_under(root: str | os.PathLike[str], parts: Sequence[str], name: str, max_bytes: int) -> tuple[BinaryIO, int]:
    """(unbuffered reader, size) of the regular file ``root/parts.../name``; TransferError for anything else.

    ``max_bytes`` bounds the size (checked on the open descriptor); the caller owns the returned file.
    """
    where = "/".join([*parts, name])
    fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)  # the root is what the user named: it may be a link itself
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                raise _refusal(where, err) from None
            os.close(fd)
            fd = child
        try:
            file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except OSError as err:
            raise _refusal(where, err) from None
    finally:
        os.close(fd)
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(file_fd)
        raise TransferError(f"{where}: not a regular file (not served)")
    if st.st_size > max_bytes:
        os.close(file_fd)
        raise TransferError(f"{where}: {st.st_size} bytes, over the limit of {max_bytes}")
    os.set_blocking(file_fd, True)
    return os.fdopen(file_fd, "rb", buffering=0), st.st_size


def read_under(root: str | os.PathLike[str], parts: Sequence[str], name: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``root/parts.../name`` (at most its size at open time, and ``max_bytes``)."""
    fh, size = open_under(root, parts, name, max_bytes)
    with fh:
        return read_upto(fh, size)


def read_upto(fh: BinaryIO, size: int) -> bytes:
    """At most ``size`` bytes of ``fh`` (fewer only if the file shrank since its size was taken)."""
    data = bytearray()
    while len(data) < size and (chunk := fh.read(size - len(data))):
        data += chunk
    return bytes(data)


def relative_parts(root: Path, folder: Path) -> tuple[str, ...] | None:
    """``folder``'s real path as components under ``root``'s real path, or None when it resolves outside."""
    real_root, real = root.resolve(), folder.resolve()
    return real.relative_to(real_root).parts if real.is_relative_to(real_root) else None
