"""The fetch client: stream a plasmid into a staging folder, hash while receiving, check, then move it into place.

    >>> from plora.grpc.server import serve
    >>> from plora.grpc.checks import signature_check
    >>> from plora.grpc.client import fetch, get_inventory
    >>> server = serve("out/", port=0)
    >>> sorted(e.id for e in get_inventory(server.address))
    ['legal', 'medical']
    >>> r = fetch(server.address, "legal", "received/", checks=[signature_check(["keys/alice.pub"])])
    >>> r.accepted, r.path, r.reasons
    (True, PosixPath('received/legal'), [])
    >>> r = fetch(server.address, "medical", "received/", checks=[signature_check(["keys/alice.pub"])])
    >>> r.accepted, r.reasons                           # unsigned: refused, and nothing left in received/
    (False, ['SIGNATURE_MISSING: ...'])
    >>> server.stop()

The artifact goes to a hidden staging folder inside the destination (``.plora-fetch-<pid>-*``: on the same
filesystem as its final place, even when the destination is a mount point; hidden folders are never indexed or
offered), so no plasmid under the destination is ever partial: a chunk receiver feeds a bounded queue that a second
thread hashes and writes (hashlib and file writes release the GIL, so hashing overlaps receiving and memory stays at
a few chunks). Size, sha256 and the adapter_config hash are checked against the manifest; then every check
(signatures, gate) runs on the staged folder, and only an accepted plasmid is renamed into ``dest/<id>`` (same
filesystem, atomic). A rejected one is deleted, or moved to a quarantine folder with its reasons. Staging folders of
dead processes are removed by the next fetch into the same destination.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from plora.errors import ManifestError, TransferError
from plora.fsio import dead_temp_of, process_temp_dir, remove_orphans, replace_dir
from plora.grpc.bulk import BulkError, HashWriter, receive_bulk
from plora.grpc.checks import Check
from plora.grpc.limits import Limits, check_id, parse_address
from plora.grpc.proto import pb2, pb2_grpc
from plora.grpc.tls import ClientTLS
from plora.hashing import sha256_bytes
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    MANIFEST_NAME,
    SIGNATURE_FILES,
    Manifest,
    is_plasmid_file,
    loads_manifest,
)

STAGE_PREFIX = ".plora-fetch-"
_install_lock = threading.Lock()


@dataclass
class FetchResult:
    id: str
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    path: Path | None = None
    sha256: str = ""
    size: int = 0
    domain: str = ""
    bytes_received: int = 0  # manifest + adapter_config + artifact bytes that arrived
    manifest_bytes: int = 0  # of which plora.yml + adapter_config.json + detached signatures
    receive_s: float = 0.0
    check_s: float = 0.0
    quarantined: Path | None = None
    bulk_fallback: str = ""  # why the bulk socket failed, when the bytes then came over the gRPC stream


@dataclass(frozen=True)
class RemoteEntry:
    id: str
    domain: str
    sha256: str
    size: int
    manifest: bytes


def open_channel(address: str, tls: ClientTLS | None = None, limits: Limits = Limits()) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address, options=limits.channel_options())
    return grpc.secure_channel(address, tls.credentials(), options=limits.channel_options() + tls.options())


def _rpc_error(address: str, err: grpc.RpcError) -> TransferError:
    code = err.code().name if hasattr(err, "code") and err.code() else "ERROR"
    details = err.details() if hasattr(err, "details") else str(err)
    return TransferError(f"{address}: {code}: {details}")


def get_inventory(address: str, tls: ClientTLS | None = None, limits: Limits = Limits(),
                  channel: grpc.Channel | None = None) -> list[RemoteEntry]:
    own = channel is None
    channel = channel or open_channel(address, tls, limits)
    try:
        inv = pb2_grpc.PlasmidExchangeStub(channel).GetInventory(pb2.InventoryRequest(),
                                                                 timeout=limits.inventory_timeout_s)
    except grpc.RpcError as err:
        raise _rpc_error(address, err) from None
    finally:
        if own:
            channel.close()
    return [RemoteEntry(e.id, e.domain, e.sha256, e.size, e.manifest) for e in inv.entries]


def get_revocations(channel: grpc.Channel, ids: Sequence[str], limits: Limits = Limits()) -> list[bytes]:
    """The envelopes of revocations ``ids`` from a server; [] from a server older than revocations (UNIMPLEMENTED).
    The caller verifies every one (plora.recall): nothing here is trusted."""
    wanted = list(ids)[: limits.max_revocations]
    if not wanted:
        return []
    try:
        reply = pb2_grpc.PlasmidExchangeStub(channel).GetRevocations(pb2.RevocationRequest(ids=wanted),
                                                                     timeout=limits.inventory_timeout_s)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            return []
        raise
    return list(reply.envelopes)[: len(wanted)]


def clean_stale_stages(parent: Path) -> int:
    """Remove staging folders left by processes that died mid-fetch (their pid is in the name)."""
    return remove_orphans(parent, STAGE_PREFIX)


def _receive(stream, plasmid_id: str, stage: Path, limits: Limits, expect_sha256: str | None,
             result: FetchResult, host: str, deadline: float) -> Manifest:
    """Consume one Fetch stream into ``stage``; content problems land in ``result.reasons``, protocol ones raise."""
    first = next(stream, None)
    if first is None or first.WhichOneof("body") != "header":
        raise TransferError(f"{plasmid_id}: the server did not start the stream with a header")
    header = first.header
    if header.id != plasmid_id:
        raise TransferError(f"asked for {plasmid_id!r}, the server sent {header.id!r}")
    for name, data, cap in ((MANIFEST_NAME, header.manifest, limits.max_manifest_bytes),
                            (ADAPTER_CONFIG_NAME, header.adapter_config, limits.max_config_bytes)):
        if len(data) > cap:
            raise TransferError(f"{plasmid_id}: the server sent a {name} of {len(data)} bytes, over the limit of {cap}")
    names = [s.name for s in header.signatures]
    if any(n not in SIGNATURE_FILES for n in names) or len(set(names)) != len(names):
        raise TransferError(f"{plasmid_id}: unexpected signature files from the server: {names[:4]}")
    if any(len(s.data) > limits.max_signature_bytes for s in header.signatures):
        raise TransferError(f"{plasmid_id}: a signature file over the size limit")
    try:
        manifest = loads_manifest(header.manifest.decode("utf-8"), source=f"{plasmid_id}/{MANIFEST_NAME}")
    except (UnicodeDecodeError, ManifestError) as err:
        raise TransferError(f"{plasmid_id}: bad manifest from the server: {err}") from None
    art = manifest.artifact
    result.sha256, result.size, result.domain = art.sha256, art.size_bytes, manifest.domain
    header_bytes = len(header.manifest) + len(header.adapter_config) + sum(len(s.data) for s in header.signatures)
    result.bytes_received += header_bytes
    result.manifest_bytes += header_bytes
    if manifest.plasmid_id != plasmid_id:
        raise TransferError(f"asked for {plasmid_id!r}, the manifest names {manifest.plasmid_id!r}")
    if expect_sha256 and art.sha256 != expect_sha256:
        raise TransferError(f"{plasmid_id}: expected artifact {expect_sha256[:12]}, manifest says {art.sha256[:12]}")
    if header.size != art.size_bytes:
        result.reasons.append(f"ARTIFACT_SHA_MISMATCH: server has {header.size} bytes, manifest says {art.size_bytes}")
        return manifest
    if art.size_bytes > limits.max_artifact_bytes:
        result.reasons.append(f"ARTIFACT_TOO_LARGE: {art.size_bytes} bytes > limit {limits.max_artifact_bytes}")
        return manifest
    if sha256_bytes(header.adapter_config) != art.config_sha256:
        result.reasons.append("CONFIG_SHA_MISMATCH: adapter_config.json received does not hash to the manifest's")
        return manifest
    (stage / MANIFEST_NAME).write_bytes(header.manifest)
    (stage / ADAPTER_CONFIG_NAME).write_bytes(header.adapter_config)
    for sig in header.signatures:  # detached signatures travel as stored; the checks judge them
        (stage / sig.name).write_bytes(sig.data)
    if header.bulk_port:
        try:
            got, received = receive_bulk(host, header.bulk_port, header.bulk_token, art.size_bytes,
                                         stage / art.filename, limits, deadline)
        except BulkError as err:
            result.bytes_received += err.received  # they crossed the wire too
            raise
    else:
        got, received = _receive_stream(stream, plasmid_id, stage / art.filename, art.size_bytes, limits)
    result.bytes_received += received
    if received != art.size_bytes:
        raise TransferError(f"{plasmid_id}: transfer ended after {received} of {art.size_bytes} bytes")
    if got != art.sha256:
        result.reasons.append(f"ARTIFACT_SHA_MISMATCH: hash mismatch for {art.filename}: received bytes hash to "
                              f"{got[:16]}..., manifest says {art.sha256[:16]}...")
    return manifest


def _receive_stream(stream, plasmid_id: str, path: Path, size: int, limits: Limits) -> tuple[str, int]:
    writer = HashWriter(path, limits.queue_chunks, fsync=limits.fsync)
    writer.start()
    received = 0
    try:
        for msg in stream:
            data = msg.data
            received += len(data)
            if received > size:
                raise TransferError(f"{plasmid_id}: the server sent more than the {size} bytes announced")
            writer.queue.put(data)
    finally:
        writer.queue.put(None)
        writer.join()
    if writer.error is not None:
        raise TransferError(f"{plasmid_id}: cannot write {path}: {writer.error}")
    return writer.sha.hexdigest(), received


def _plasmid_leftover(name: str) -> bool:
    """A plasmid file, or the temporary file of one that a killed ``plora sign`` (or write) left behind."""
    temp_of = dead_temp_of(name)
    return is_plasmid_file(name if temp_of is None else temp_of)


def check_replaceable(final: Path) -> None:
    """Refuse a ``dest/<id>`` that a fetch may not replace: anything but an empty folder or an earlier plasmid folder
    (a ``plora.yml`` and nothing but plasmid files). A folder of notes or keys that happens to bear a peer's chosen
    id is never deleted."""
    try:
        st = final.lstat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise TransferError(f"cannot check {final}: {err.strerror or err}") from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise TransferError(f"{final} exists and is {kind}: a fetch replaces only an earlier plasmid folder")
    try:
        entries = list(os.scandir(final))
    except OSError as err:
        raise TransferError(f"cannot check {final}: {err.strerror or err}") from None
    foreign = sorted(e.name for e in entries if not (e.is_file(follow_symlinks=False) and _plasmid_leftover(e.name)))
    if foreign or (entries and not any(e.name == MANIFEST_NAME for e in entries)):
        what = f"it also holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}" if foreign else \
            f"it has no {MANIFEST_NAME}"
        raise TransferError(f"{final} exists and is not a plasmid folder ({what}): not replaced; move it away first")


def _install(stage: Path, final: Path) -> None:
    """Move the checked stage into place; an earlier plasmid of the same id is swapped out in one step
    (:func:`plora.fsio.replace_dir`: ``final`` is never missing, even if this process is killed), anything else at
    ``final`` is refused (TransferError) and left as it was."""
    with _install_lock:
        final.parent.mkdir(parents=True, exist_ok=True)
        check_replaceable(final)
        old = replace_dir(stage, final)
        if old is not None:
            try:
                check_replaceable(old)  # nothing slipped in since the check above: we own it now, out of place
            except TransferError:
                mine = replace_dir(old, final)  # put it back; ours goes where it was
                if mine is not None:
                    shutil.rmtree(mine, ignore_errors=True)
                check_replaceable(final)  # says what is there, by its own name
                raise
        with contextlib.suppress(OSError):
            fd = os.open(final.parent, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _quarantine(stage: Path, quarantine: Path, result: FetchResult) -> Path:
    name = f"{result.id}-{(result.sha256 or 'unknown')[:12]}-{int(time.time())}"
    (stage / "rejected.json").write_text(json.dumps({"id": result.id, "reasons": result.reasons}, indent=2) + "\n")
    quarantine.mkdir(parents=True, exist_ok=True)
    target, n = quarantine / name, 1
    while target.exists():  # the same plasmid refused twice within a second: never move one into the other
        n += 1
        target = quarantine / f"{name}-{n}"
    shutil.move(str(stage), target)
    return target


def prepare_dest(dest: Path, quarantine: Path | None = None) -> Path:
    """``dest`` (and ``quarantine``) as existing folders, and the folder fetches stage in (``dest`` itself, resolved:
    the final rename then never crosses filesystems); TransferError otherwise, before either is created.

    A quarantine inside ``dest`` is refused: refused plasmids would sit under the destination (and be offered from
    it by a server or agent on that folder)."""
    folders = {"destination": Path(dest)} | ({} if quarantine is None else {"quarantine": Path(quarantine)})
    for what, folder in folders.items():
        if folder.exists() and not folder.is_dir():
            raise TransferError(f"{what} {folder} exists and is not a folder")
    if quarantine is not None and Path(quarantine).resolve().is_relative_to(Path(dest).resolve()):
        raise TransferError(f"quarantine {quarantine} is inside the destination {dest}: refused plasmids must never "
                            f"appear under it")
    for what, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TransferError(f"cannot create the {what} folder {folder}: {err.strerror or err}") from None
    return Path(dest).resolve()


def _make_stage(parent: Path) -> Path:
    try:
        stage = process_temp_dir(STAGE_PREFIX, parent)
    except OSError as err:
        raise TransferError(f"cannot stage a fetch in {parent}: {err.strerror or err}") from None
    os.chmod(stage, 0o755)  # mkdtemp makes it 0700; the installed plasmid folder should read like any other
    return stage


class _Busy(Exception):
    """The server answered RESOURCE_EXHAUSTED: every fetch slot (or this client's share) is taken."""


def _fetch_once(channel: grpc.Channel, address: str, plasmid_id: str, stage: Path, limits: Limits,
                expect_sha256: str | None, result: FetchResult, deadline: float, bulk: bool) -> None:
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        raise TransferError(f"fetch of {plasmid_id} from {address} past its deadline")
    stream = pb2_grpc.PlasmidExchangeStub(channel).Fetch(
        pb2.FetchRequest(id=plasmid_id, sha256=expect_sha256 or "", bulk=bulk), timeout=timeout)
    try:
        _receive(stream, plasmid_id, stage, limits, expect_sha256, result, parse_address(address)[0], deadline)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise _Busy(str(_rpc_error(address, err))) from None
        raise _rpc_error(address, err) from None
    finally:
        stream.cancel()


def fetch(address: str, plasmid_id: str, dest: str | os.PathLike[str], *, checks: Sequence[Check] = (),
          tls: ClientTLS | None = None, limits: Limits = Limits(), expect_sha256: str | None = None,
          size_hint: int | None = None, quarantine: str | os.PathLike[str] | None = None,
          channel: grpc.Channel | None = None) -> FetchResult:
    """Fetch ``plasmid_id`` from ``address`` into ``dest/<id>``, or refuse it with reasons (nothing left in dest).

    Content problems (hash, size, failed checks) give ``accepted=False`` with reasons; transport and protocol
    failures (unreachable, unknown id, broken stream, deadline) raise TransferError. Either way the staging
    folder is gone when this returns. A busy server (RESOURCE_EXHAUSTED) is retried for ``limits.busy_wait_s``;
    a failed bulk transfer is retried once over the gRPC stream (``result.bulk_fallback`` says why) into a fresh
    staging folder, within the same deadline (``limits.fetch_deadline``): a stalled bulk socket cannot double it,
    and no file of the failed attempt can end up in the plasmid.
    """
    check_id(plasmid_id)
    dest = Path(dest)
    staging = prepare_dest(dest, None if quarantine is None else Path(quarantine))
    check_replaceable(dest / plasmid_id)  # before any transfer; checked again at the rename
    clean_stale_stages(staging)
    result = FetchResult(id=plasmid_id, accepted=False)
    own = channel is None
    channel = channel or open_channel(address, tls, limits)
    stage = _make_stage(staging)
    try:
        if size_hint is None:
            listed = {e.id: e for e in get_inventory(address, limits=limits, channel=channel)}
            if plasmid_id not in listed:
                offered = ", ".join(sorted(listed)[:20]) or "nothing"
                raise TransferError(f"{address} has no plasmid {plasmid_id!r} (it offers: {offered})")
            size_hint = listed[plasmid_id].size
        t0 = time.perf_counter()
        timeout = limits.fetch_deadline(min(size_hint, limits.max_artifact_bytes))
        bulk = limits.bulk and tls is None
        busy_until, pause = time.monotonic() + limits.busy_wait_s, 0.05
        deadline = time.monotonic() + timeout  # one deadline for the transfer, the gRPC fallback included
        while True:
            try:
                _fetch_once(channel, address, plasmid_id, stage, limits, expect_sha256, result, deadline, bulk)
                break
            except BulkError as err:
                if not bulk:
                    raise
                bulk, result.bulk_fallback = False, str(err)
                # the retry's header may name other files: nothing of the failed attempt may reach the plasmid
                shutil.rmtree(stage, ignore_errors=True)
                stage = _make_stage(staging)
            except _Busy as busy:
                if time.monotonic() + pause > busy_until:
                    raise TransferError(str(busy)) from None
                time.sleep(pause)
                deadline += pause  # nothing was transferred while the server was busy
                pause = min(1.0, 2 * pause)
        result.receive_s = time.perf_counter() - t0
        if not result.reasons:
            t1 = time.perf_counter()
            for check in checks:
                result.reasons.extend(check(stage))
                if result.reasons:
                    break
            result.check_s = time.perf_counter() - t1
        if result.reasons:
            if quarantine is not None:
                result.quarantined = _quarantine(stage, Path(quarantine), result)
            return result
        result.path = dest / plasmid_id
        _install(stage, result.path)
        result.accepted = True
        return result
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if own:
            channel.close()
