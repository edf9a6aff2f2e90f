"""The offer server: serves every plasmid folder under a root over gRPC (inventory + chunked fetch).

    >>> from plora.grpc.server import serve
    >>> server = serve("out/", port=0)                   # 0: the OS picks a free port
    >>> server.address
    '127.0.0.1:...'
    >>> server.stop()

A plasmid folder is any folder under the root (depth <= 3, hidden folders skipped) holding a valid ``plora.yml``;
its id is the manifest's ``plasmid_id``. The root is rescanned on every request, re-parsing only manifests whose
file changed, so plasmids dropped into the root (atomically, e.g. by ``plora train``) appear without a restart.
Requests name ids only; an id resolves through that index, never by joining it to a path, and a folder whose real
path leaves the root (a symlink) is ignored.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from plora.errors import ManifestError, TransferError
from plora.grpc.bulk import BulkServer
from plora.grpc.limits import Limits, check_id
from plora.grpc.proto import pb2, pb2_grpc
from plora.grpc.tls import ServerTLS
from plora.manifest import ADAPTER_CONFIG_NAME, MANIFEST_NAME, Manifest, loads_manifest

log = logging.getLogger(__name__)
MAX_DEPTH = 3


@dataclass(frozen=True)
class Entry:
    folder: Path
    manifest: Manifest
    manifest_bytes: bytes

    @property
    def id(self) -> str:
        return self.manifest.plasmid_id

    @property
    def artifact(self) -> Path:
        return self.folder / self.manifest.artifact.filename

    def to_proto(self) -> pb2.InventoryEntry:
        m = self.manifest
        return pb2.InventoryEntry(id=m.plasmid_id, domain=m.domain, sha256=m.artifact.sha256,
                                  size=m.artifact.size_bytes, manifest=self.manifest_bytes)


class PlasmidIndex:
    """The plasmids under ``root``, keyed by plasmid id; :meth:`refresh` rescans cheaply (stat per folder)."""

    def __init__(self, root: str | os.PathLike[str], limits: Limits = Limits()) -> None:
        self.root = Path(root)
        self.limits = limits
        self._lock = threading.Lock()
        self._parsed: dict[Path, tuple[tuple[int, int, int], Entry | None]] = {}
        self._by_id: dict[str, Entry] = {}

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

    def _load(self, folder: Path) -> Entry | None:
        path = folder / MANIFEST_NAME
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._parsed.get(folder)
        if cached and cached[0] == key:
            return cached[1]
        entry = None
        try:
            if st.st_size > self.limits.max_manifest_bytes:
                raise ManifestError(f"{path}: manifest larger than {self.limits.max_manifest_bytes} bytes")
            raw = path.read_bytes()
            entry = Entry(folder=folder, manifest=loads_manifest(raw.decode("utf-8"), str(path)), manifest_bytes=raw)
        except (OSError, UnicodeDecodeError, ManifestError) as err:
            log.warning("not serving %s: %s", folder, err)
        self._parsed[folder] = (key, entry)
        return entry

    def refresh(self) -> dict[str, Entry]:
        with self._lock:
            root = self.root.resolve()
            folders: list[Path] = []
            if self.root.is_dir():
                self._walk(self.root, 0, folders)
            by_id: dict[str, Entry] = {}
            for folder in folders:
                if not folder.resolve().is_relative_to(root):
                    log.warning("not serving %s: it resolves outside %s", folder, root)
                    continue
                entry = self._load(folder)
                if entry is None:
                    continue
                if entry.id in by_id:
                    log.warning("duplicate plasmid id %r in %s and %s; serving the first", entry.id,
                                by_id[entry.id].folder, folder)
                    continue
                by_id[entry.id] = entry
            self._parsed = {f: v for f, v in self._parsed.items() if f in set(folders)}
            self._by_id = by_id
            return dict(by_id)

    def get(self, plasmid_id: str) -> Entry | None:
        return self.refresh().get(check_id(plasmid_id))


class PlasmidServicer(pb2_grpc.PlasmidExchangeServicer):
    """GetInventory + Fetch over a :class:`PlasmidIndex`. Offer/Step are answered by networked agents only."""

    def __init__(self, index: PlasmidIndex, limits: Limits = Limits(), advertise: str = "") -> None:
        self.index = index
        self.limits = limits
        self.advertise = advertise
        self.bulk: BulkServer | None = None  # set by OfferServer on plaintext servers
        self._streams = threading.BoundedSemaphore(limits.max_streams)
        self._stats_lock = threading.Lock()
        self.bytes_sent = 0
        self.fetches_served = 0

    def inventory(self) -> pb2.Inventory:
        entries = sorted(self.index.refresh().values(), key=lambda e: e.id)[: self.limits.max_inventory_entries]
        return pb2.Inventory(entries=[e.to_proto() for e in entries], agent=self.advertise)

    def GetInventory(self, request: pb2.InventoryRequest, context: grpc.ServicerContext) -> pb2.Inventory:
        inv = self.inventory()
        with self._stats_lock:
            self.bytes_sent += inv.ByteSize()
        return inv

    def Fetch(self, request: pb2.FetchRequest, context: grpc.ServicerContext) -> Iterator[pb2.FetchChunk]:
        try:
            entry = self.index.get(request.id)
        except TransferError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no plasmid {request.id!r} here")
        if request.sha256 and request.sha256 != entry.manifest.artifact.sha256:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{request.id} here has artifact {entry.manifest.artifact.sha256[:12]}, not the one asked")
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {self.limits.max_streams} fetches at once")
        slot = _Slot(self._streams)
        # a reader that stops reading would hold a worker and a stream slot forever: cancel it past the limit
        watchdog = threading.Timer(self.limits.stream_timeout_s, context.cancel)
        watchdog.daemon = True
        watchdog.start()
        context.add_callback(slot.release)
        context.add_callback(watchdog.cancel)
        try:
            yield from self._stream(entry, context, slot, bool(request.bulk))
        finally:
            watchdog.cancel()
            slot.release()

    def _stream(self, entry: Entry, context: grpc.ServicerContext, slot: _Slot,
                bulk: bool) -> Iterator[pb2.FetchChunk]:
        try:
            config = (entry.folder / ADAPTER_CONFIG_NAME).read_bytes()[: self.limits.max_config_bytes + 1]
            fh = open(entry.artifact, "rb", buffering=0)  # noqa: SIM115 - closed in finally, across yields
        except OSError as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{entry.id}: cannot read plasmid ({err.strerror})")
        sent = 0
        try:
            size = os.fstat(fh.fileno()).st_size
            chunk = self.limits.chunk_bytes
            header = pb2.FetchHeader(id=entry.id, manifest=entry.manifest_bytes, adapter_config=config, size=size,
                                     chunk_size=chunk)
            sent += len(entry.manifest_bytes) + len(config)
            if bulk and self.bulk is not None:
                # the ticket now owns the open file and the stream slot; both are released when it is used or expires
                header.bulk_token = self.bulk.issue(fh, size, slot.handover())
                header.bulk_port = self.bulk.port
                fh = None
                yield pb2.FetchChunk(header=header)
                return
            yield pb2.FetchChunk(header=header)
            while data := fh.read(chunk):
                yield pb2.FetchChunk(data=data)
                sent += len(data)
        finally:
            if fh is not None:
                fh.close()
            with self._stats_lock:
                self.bytes_sent += sent
                self.fetches_served += 1


class _Slot:
    """One Fetch's share of the stream semaphore, released exactly once (by the stream or a bulk ticket)."""

    def __init__(self, sem: threading.BoundedSemaphore) -> None:
        self._sem = sem
        self._lock = threading.Lock()
        self._held = True
        self._handed = False

    def release(self, force: bool = False) -> None:
        with self._lock:
            if not self._held or (self._handed and not force):
                return
            self._held = False
        self._sem.release()

    def handover(self):  # -> Callable[[], None]
        with self._lock:
            self._handed = True
        return lambda: self.release(force=True)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OfferServer:
    """A started gRPC server around a servicer; ``port=0`` lets the OS pick (see :attr:`port`)."""

    def __init__(self, servicer: PlasmidServicer, host: str = "127.0.0.1", port: int = 0,
                 tls: ServerTLS | None = None) -> None:
        limits = servicer.limits
        self.servicer = servicer
        self.host = host
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limits.max_streams + 8, thread_name_prefix="plora-offer"),
            options=limits.server_options(),
            maximum_concurrent_rpcs=limits.max_streams + 32,
        )
        pb2_grpc.add_PlasmidExchangeServicer_to_server(servicer, self._server)
        target = format_address(host, port)
        try:
            if tls is None:
                self.port = self._server.add_insecure_port(target)
            else:
                self.port = self._server.add_secure_port(target, tls.credentials())
        except RuntimeError as err:
            raise TransferError(f"cannot listen on {target}: {err}") from None
        if not self.port:
            raise TransferError(f"cannot listen on {target} (in use?)")
        if tls is None and limits.bulk:
            servicer.bulk = BulkServer(host, limits)
        self._server.start()

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def stop(self, grace: float | None = 1.0) -> None:
        self._server.stop(grace).wait()
        if self.servicer.bulk is not None:
            self.servicer.bulk.close()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def __enter__(self) -> OfferServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(root: str | os.PathLike[str], port: int = 50051, host: str = "127.0.0.1", *, limits: Limits = Limits(),
          tls: ServerTLS | None = None) -> OfferServer:
    """Start serving the plasmids under ``root`` and return the running server (call ``.wait()`` to block)."""
    if not Path(root).is_dir():
        raise TransferError(f"{root}: no such folder to offer")
    return OfferServer(PlasmidServicer(PlasmidIndex(root, limits), limits), host=host, port=port, tls=tls)
