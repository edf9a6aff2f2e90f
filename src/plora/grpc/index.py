"""What an offer server serves: the plasmid folders under a root, keyed by plasmid id.

    >>> from plora.grpc.index import PlasmidIndex
    >>> index = PlasmidIndex("out/")
    >>> sorted(index.refresh())                        # rescans; re-parses only manifests whose file changed
    ['legal', 'medical']
    >>> index.get("legal").folder
    PosixPath('/.../out/legal')

A plasmid folder is any folder under the root (depth <= 3, hidden folders skipped) holding a valid ``plora.yml``;
its id is the manifest's ``plasmid_id``. The root is rescanned on every request, so plasmids dropped into the root
(atomically, e.g. by ``plora train``) appear without a restart. A folder whose real path leaves the root (a symlink)
is ignored, and so is a second folder with an id already taken; each problem is logged once per folder.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from plora.errors import ManifestError, TransferError
from plora.grpc.limits import Limits, check_id
from plora.grpc.proto import pb2
from plora.grpc.rootfs import open_under, read_upto, relative_parts
from plora.manifest import MANIFEST_NAME, Manifest, loads_manifest

log = logging.getLogger("plora.grpc.server")  # the server's log: what it does not serve, and why
MAX_DEPTH = 3


@dataclass(frozen=True)
class Entry:
    root: Path  # the index's real root
    parts: tuple[str, ...]  # the folder's real path below it: every read goes through plora.grpc.rootfs
    manifest: Manifest
    manifest_bytes: bytes

    @property
    def id(self) -> str:
        return self.manifest.plasmid_id

    @property
    def folder(self) -> Path:
        return self.root.joinpath(*self.parts)

    def open(self, name: str, max_bytes: int) -> tuple[BinaryIO, int]:
        return open_under(self.root, self.parts, name, max_bytes)

    def to_proto(self) -> pb2.InventoryEntry:
        m = self.manifest
        return pb2.InventoryEntry(id=m.plasmid_id, domain=m.domain, sha256=m.artifact.sha256,
                                  size=m.artifact.size_bytes, manifest=self.manifest_bytes)


class PlasmidIndex:
    """The plasmids under ``root``, keyed by plasmid id; :meth:`refresh` rescans cheaply (one fstat per folder)."""

    def __init__(self, root: str | os.PathLike[str], limits: Limits = Limits()) -> None:
        self.root = Path(root)
        self.limits = limits
        self._lock = threading.Lock()
        self._parsed: dict[Path, tuple[tuple[int, int, int], Entry | None]] = {}
        self._by_id: dict[str, Entry] = {}
        self._warned: set[tuple[Path, str]] = set()  # each problem is logged once per folder, not per request
        self._seen: set[Path] = set()

    def _warn(self, folder: Path, message: str) -> None:
        self._seen.add(folder)
        if (folder, message) not in self._warned:
            self._warned.add((folder, message))
            log.warning("not serving %s: %s", folder, message)

    def _walk(self, folder: Path, depth: int, found: list[Path]) -> None:
        try:
            children = sorted(os.scandir(folder), key=lambda d: d.name)
        except OSError:
            return
        if any(c.name == MANIFEST_NAME and c.is_file() for c in children):
            found.append(folder)
            return
        if depth >= MAX_DEPTH:
            return
        for child in children:
            if not child.name.startswith(".") and child.is_dir():
                self._walk(Path(child.path), depth + 1, found)

    def _load(self, folder: Path, root: Path, parts: tuple[str, ...]) -> Entry | None:
        try:
            fh, _ = open_under(root, parts, MANIFEST_NAME, self.limits.max_manifest_bytes)
        except TransferError as err:
            self._parsed.pop(folder, None)
            self._warn(folder, str(err))
            return None
        with fh:
            st = os.fstat(fh.fileno())
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._parsed.get(folder)
            if cached and cached[0] == key:
                return cached[1]
            entry = None
            try:
                raw = read_upto(fh, st.st_size)
                entry = Entry(root=root, parts=parts, manifest=loads_manifest(raw.decode("utf-8"), str(folder)),
                              manifest_bytes=raw)
            except (OSError, UnicodeDecodeError, ManifestError) as err:
                self._warn(folder, str(err))
        self._parsed[folder] = (key, entry)
        return entry

    def refresh(self) -> dict[str, Entry]:
        with self._lock:
            root = self.root.resolve()
            folders: list[Path] = []
            if self.root.is_dir():
                self._walk(self.root, 0, folders)
            by_id: dict[str, Entry] = {}
            self._seen = set()
            for folder in folders:
                parts = relative_parts(root, folder)
                if parts is None:
                    self._warn(folder, f"it resolves outside {root}")
                    continue
                entry = self._load(folder, root, parts)
                if entry is None:
                    continue
                if entry.id in by_id:
                    self._warn(folder, f"duplicate plasmid id {entry.id!r} (also in {by_id[entry.id].folder})")
                    continue
                by_id[entry.id] = entry
            self._parsed = {f: v for f, v in self._parsed.items() if f in set(folders)}
            # a folder that is fixed (or gone) gets a fresh warning if it breaks again
            self._warned = {w for w in self._warned if w[0] in self._seen}
            self._by_id = by_id
            return dict(by_id)

    def get(self, plasmid_id: str) -> Entry | None:
        return self.refresh().get(check_id(plasmid_id))
