"""The offer server: serves every plasmid folder under a root over gRPC (inventory + chunked fetch).

    >>> from plora.grpc.server import serve
    >>> server = serve("out/", port=0)                   # 0: the OS picks a free port
    >>> server.address
    '127.0.0.1:...'
    >>> server.stop()

What it serves is a :class:`plora.grpc.index.PlasmidIndex` of the root, rescanned on every request. Requests name
ids only; an id resolves through that index, never by joining it to a path, and every file is read through
:mod:`plora.grpc.rootfs`: only regular files reached without following a symlink, their size checked against the
limits before the first byte is read.

Fetch slots: at most ``max_streams`` at once and ``max_streams_per_peer`` per client IP (more get
RESOURCE_EXHAUSTED); a slot is freed when its stream ends or is cancelled, and a stream still open after
``min(stream_timeout_s, fetch_deadline(size))`` is cancelled. A bulk ticket (see :mod:`plora.grpc.bulk`) keeps its
stream open until the client connects, so a client that cancels instead frees the slot at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import BinaryIO, Protocol

import grpc

from plora.errors import TransferError
from plora.grpc.bulk import BulkServer
from plora.grpc.index import Entry, PlasmidIndex
from plora.grpc.limits import Limits
from plora.grpc.proto import pb2, pb2_grpc
from plora.grpc.rootfs import read_under
from plora.grpc.tls import ServerTLS
from plora.manifest import ADAPTER_CONFIG_NAME, SIGNATURE_FILES

_REVOCATION_ID = re.compile(r"[0-9a-f]{64}")


class RevocationSource(Protocol):
    """What a server needs to hand out revocations (:class:`plora.recall.store.RecallStore` is one)."""

    def ids(self) -> list[str]: ...

    def envelope(self, rid: str) -> bytes | None: ...


def peer_ip(context: grpc.ServicerContext) -> str:
    """The caller's IP address (``ipv4:1.2.3.4:5`` -> ``1.2.3.4``; gRPC percent-encodes an IPv6 one,
    ``ipv6:%5B::1%5D:5`` -> ``::1``), or the raw peer string for other transports."""
    peer = urllib.parse.unquote(context.peer() or "")
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.split(":", 1)[1].rsplit(":", 1)[0].strip("[]")
    return peer


class StreamSlots:
    """Fetch slots: at most ``total`` at once and at most ``per_peer`` for one client IP (an agent's Offers use one
    more set, ``what="offers"``)."""

    def __init__(self, total: int, per_peer: int, what: str = "fetches") -> None:
        self.total = total
        self.per_peer = per_peer
        self.what = what
        self._lock = threading.Lock()
        self._by_peer: dict[str, int] = {}

    def in_use(self, peer: str | None = None) -> int:
        with self._lock:
            return sum(self._by_peer.values()) if peer is None else self._by_peer.get(peer, 0)

    def acquire(self, peer: str) -> _Slot | str:
        """A held slot, or why there is none."""
        with self._lock:
            if sum(self._by_peer.values()) >= self.total:
                return f"more than {self.total} {self.what} at once"
            if self._by_peer.get(peer, 0) >= self.per_peer:
                return f"more than {self.per_peer} {self.what} at once from {peer}"
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return _Slot(self, peer)

    def _release(self, peer: str) -> None:
        with self._lock:
            left = self._by_peer[peer] - 1
            if left:
                self._by_peer[peer] = left
            else:
                del self._by_peer[peer]


class _Slot:
    """One Fetch's slot, released exactly once (by its stream or, once handed over, by its bulk ticket)."""

    def __init__(self, slots: StreamSlots, peer: str) -> None:
        self._slots = slots
        self.peer = peer
        self._lock = threading.Lock()
        self._held = True
        self._handed = False

    def release(self, force: bool = False) -> None:
        with self._lock:
            if not self._held or (self._handed and not force):
                return
            self._held = False
        self._slots._release(self.peer)

    def handover(self) -> Callable[[], None]:
        with self._lock:
            self._handed = True
        return lambda: self.release(force=True)


class PlasmidServicer(pb2_grpc.PlasmidExchangeServicer):
    """GetInventory + Fetch over a :class:`PlasmidIndex`. Offer/Step are answered by networked agents only."""

    def __init__(self, index: PlasmidIndex, limits: Limits = Limits(), advertise: str = "",
                 revocations: RevocationSource | None = None) -> None:
        self.index = index
        self.limits = limits
        self.advertise = advertise
        self.revocations = revocations  # what GetRevocations serves and inventories list (plora.recall)
        self.bulk: BulkServer | None = None  # set by OfferServer on plaintext servers
        self.slots = StreamSlots(limits.max_streams, limits.max_streams_per_peer)
        self._stats_lock = threading.Lock()
        self.bytes_sent = 0
        self.fetches_served = 0

    def inventory(self) -> pb2.Inventory:
        entries = sorted(self.listed().values(), key=lambda e: e.id)[: self.limits.max_inventory_entries]
        refs = []
        if self.revocations is not None:
            for rid in self.revocation_ids()[: self.limits.max_revocations]:
                data = self.revocations.envelope(rid)
                if data is not None:
                    refs.append(pb2.RevocationRef(id=rid, size=len(data)))
        return pb2.Inventory(entries=[e.to_proto() for e in entries], agent=self.advertise, revocations=refs)

    def listed(self) -> dict[str, Entry]:
        """The plasmids inventories list and Fetch serves: every one held (an agent narrows it to its round's)."""
        return self.index.refresh()

    def serves(self, entry: Entry) -> bool:
        """Whether Fetch hands ``entry`` out (an agent: only what it held when the round began)."""
        return True

    def revocation_ids(self) -> list[str]:
        """The revocations inventories list: every one held (an agent: those it held when the round began)."""
        return self.revocations.ids() if self.revocations is not None else []

    def GetRevocations(self, request: pb2.RevocationRequest, context: grpc.ServicerContext) -> pb2.RevocationSet:
        """The envelopes of the revocations asked for that this server holds (unknown ids are skipped)."""
        out: list[bytes] = []
        if self.revocations is not None:
            for rid in list(request.ids)[: self.limits.max_revocations]:
                data = self.revocations.envelope(rid) if _REVOCATION_ID.fullmatch(rid) else None
                if data is not None:
                    out.append(data)
        reply = pb2.RevocationSet(envelopes=out)
        with self._stats_lock:
            self.bytes_sent += reply.ByteSize()
        return reply

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
        if not self.serves(entry):
            context.abort(grpc.StatusCode.NOT_FOUND, f"{entry.id} arrived here this round: served from the next one")
        if request.sha256 and request.sha256 != entry.manifest.artifact.sha256:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{request.id} here has artifact {entry.manifest.artifact.sha256[:12]}, not the one asked")
        slot = self.slots.acquire(peer_ip(context))
        if isinstance(slot, str):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, slot)
        context.add_callback(slot.release)  # a cancelled or finished stream frees its slot at once
        try:
            config = read_under(entry.root, entry.parts, ADAPTER_CONFIG_NAME, self.limits.max_config_bytes)
            fh, size = entry.open(entry.manifest.artifact.filename, self.limits.max_artifact_bytes)
        except TransferError as err:
            slot.release()
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{entry.id}: cannot serve: {err}")
        # a reader that stops reading would hold a worker and a slot: cancel it once a fair client would be done
        watchdog = threading.Timer(min(self.limits.stream_timeout_s, self.limits.fetch_deadline(size)),
                                   context.cancel)
        watchdog.daemon = True
        watchdog.start()
        try:
            yield from self._stream(entry, context, slot, bool(request.bulk), config, fh, size)
        finally:
            watchdog.cancel()
            slot.release()

    def _stream(self, entry: Entry, context: grpc.ServicerContext, slot: _Slot, bulk: bool, config: bytes,
                fh: BinaryIO | None, size: int) -> Iterator[pb2.FetchChunk]:
        sent = 0
        try:
            chunk = self.limits.chunk_bytes
            sigs = _signature_files(entry, self.limits)
            header = pb2.FetchHeader(id=entry.id, manifest=entry.manifest_bytes, adapter_config=config, size=size,
                                     chunk_size=chunk, signatures=sigs)
            sent += len(entry.manifest_bytes) + len(config) + sum(len(s.data) for s in sigs)
            if bulk and self.bulk is not None:
                # the ticket now owns the open file and the slot; both are released when it is used or revoked
                header.bulk_token = token = self.bulk.issue(fh, size, slot.handover(),
                                                            self.limits.fetch_deadline(size))
                header.bulk_port = self.bulk.port
                fh = None
                context.add_callback(lambda: self.bulk.revoke(token))  # cancelled before connecting: free it now
                yield pb2.FetchChunk(header=header)
                self.bulk.wait_claimed(token)  # the stream stays open until then, so a cancel reaches the ticket
                return
            yield pb2.FetchChunk(header=header)
            left = size  # never more than the size checked at open, even if the file grows meanwhile
            while left > 0 and (data := fh.read(min(chunk, left))):
                yield pb2.FetchChunk(data=data)
                sent += len(data)
                left -= len(data)
        finally:
            if fh is not None:
                fh.close()
            with self._stats_lock:
                self.bytes_sent += sent
                self.fetches_served += 1


def _signature_files(entry: Entry, limits: Limits) -> list[pb2.SignatureFile]:
    """The detached signatures stored beside the manifest, as stored: regular files under the root, within the limit
    (opened like every served file: no symlinks, size checked on the open descriptor)."""
    out = []
    for name in SIGNATURE_FILES:
        with contextlib.suppress(OSError, TransferError):
            out.append(pb2.SignatureFile(name=name, data=read_under(entry.root, entry.parts, name,
                                                                    limits.max_signature_bytes)))
    return out


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_bindable(host: str, port: int) -> None:
    """TransferError (one line: the port is in use, the host is not this machine's) unless some address of ``host``
    accepts ``port``, as gRPC's bind would; gRPC itself says only "Failed to bind" after logging a C-core line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise TransferError(f"cannot listen on {format_address(host, port)}: {err.strerror or err}") from None
    first: OSError | None = None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no obstacle
            try:
                probe.bind(addr)
                return
            except OSError as err:
                first = first or err
    if first is None:
        return
    why = {errno.EADDRINUSE: f"port {port} is in use", errno.EADDRNOTAVAIL: f"{host} is not an address of this machine",
           errno.EACCES: f"no permission to use port {port}"}.get(first.errno, first.strerror or str(first))
    raise TransferError(f"cannot listen on {format_address(host, port)}: {why}")


class OfferServer:
    """A started gRPC server around a servicer; ``port=0`` lets the OS pick (see :attr:`port`)."""

    def __init__(self, servicer: PlasmidServicer, host: str = "127.0.0.1", port: int = 0,
                 tls: ServerTLS | None = None) -> None:
        if not 0 <= port <= 65535:
            raise TransferError(f"invalid port {port}: expected 0..65535 (0: the OS picks one)")
        if port:
            check_bindable(host, port)
        limits = servicer.limits
        self.servicer = servicer
        self.host = host
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limits.max_streams + limits.max_offers + 8,
                                       thread_name_prefix="plora-offer"),
            options=limits.server_options(),
            maximum_concurrent_rpcs=limits.max_streams + limits.max_offers + 32,
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
