"""Attacks on `plora offer` over loopback, each bounded in count and time: the server must keep serving others.

One test per attack: files that lead out of the served root, idle and dribbling connections on the bulk port,
fetches cancelled right after the header, stalled readers from one peer, and a bulk port that fails (the client
falls back to gRPC once). A second "peer" is 127.0.0.2 (still loopback): a relay connects from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import socket
import threading
import time
from concurrent import futures
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from test_grpc import craft, leftovers

from plora.errors import TransferError
from plora.grpc.checks import signature_check
from plora.grpc.client import fetch, get_inventory
from plora.grpc.limits import Limits
from plora.grpc.proto import pb2, pb2_grpc
from plora.grpc.server import serve


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll ``condition`` until true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        threading.Event().wait(0.01)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    craft(root, "legal")
    craft(root, "big", layers=1000, seed=2)  # 8 MB: a stream that stalls instead of fitting in the buffers
    return root


def test_files_leading_out_of_the_root_are_not_served(root, tmp_path):
    outside = craft(tmp_path / "outside", "secret", seed=4)
    # artifact, adapter_config and manifest each a link out of the root; one link to /dev/zero; a FIFO
    for pid, name, target in (("art-link", "adapter_model.safetensors", outside / "adapter_model.safetensors"),
                              ("zero", "adapter_config.json", Path("/dev/zero")),
                              ("man-link", "plora.yml", outside / "plora.yml")):
        folder = shutil.copytree(outside, root / pid) if pid != "zero" else craft(root, "zero", seed=5)
        if pid == "art-link":  # the same plasmid, re-id'd: its manifest hashes match the outside bytes exactly
            (folder / "plora.yml").write_text((folder / "plora.yml").read_text().replace("secret", "art-link"))
        (folder / name).unlink()
        (folder / name).symlink_to(target)
    fifo = craft(root, "fifo", seed=6)
    (fifo / "adapter_config.json").unlink()
    os.mkfifo(fifo / "adapter_config.json")
    limits = Limits(fetch_timeout_s=10, busy_wait_s=0)
    srv = serve(root, port=0, limits=limits)
    try:
        listed = {e.id for e in get_inventory(srv.address)}
        assert "secret" not in listed and "legal" in listed
        for pid, why in (("art-link", "symbolic link"), ("zero", "symbolic link"), ("fifo", "not a regular file")):
            t0 = time.monotonic()
            with pytest.raises(TransferError, match=why):
                fetch(srv.address, pid, tmp_path / "d", limits=limits)
            assert time.monotonic() - t0 < 5, f"{pid}: refused only after {time.monotonic() - t0:.1f} s"
        assert fetch(srv.address, "legal", tmp_path / "d", limits=limits).accepted  # the server is fine
        assert os.listdir(tmp_path / "d") == ["legal"] and leftovers(tmp_path) == []
    finally:
        srv.stop(0)


def test_an_artifact_over_the_limit_is_refused_before_reading(root, tmp_path):
    limits = Limits(max_artifact_bytes=100_000, busy_wait_s=0)
    srv = serve(root, port=0, limits=limits)
    try:
        with pytest.raises(TransferError, match="over the limit"):
            fetch(srv.address, "big", tmp_path / "d", limits=replace(limits, max_artifact_bytes=10_000_000))
    finally:
        srv.stop(0)


def _closed(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (EOF or reset); never blocks."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_idle_bulk_connections_do_not_block_fetches(root, tmp_path):
    from plora.grpc.bulk import HANDSHAKES_PER_PEER

    srv = serve(root, port=0, limits=Limits(bulk_handshake_s=120))  # only the caps can close them in this test
    idle = [socket.create_connection(("127.0.0.1", srv.servicer.bulk.port)) for _ in range(40)]
    try:
        for i in range(3):
            r = fetch(srv.address, "big", tmp_path / f"d{i}")
            assert r.accepted and not r.bulk_fallback, r.bulk_fallback  # over the bulk socket itself
        # one peer keeps at most HANDSHAKES_PER_PEER connections waiting: the server closed the others
        wait_for(lambda: sum(_closed(s) for s in idle) >= len(idle) - HANDSHAKES_PER_PEER, 10,
                 f"at most {HANDSHAKES_PER_PEER} idle connections kept")
        assert srv.servicer.bulk.pending_handshakes() <= HANDSHAKES_PER_PEER
    finally:
        for s in idle:
            s.close()
        srv.stop(0)


def test_dribbling_bulk_handshakes_are_cut_at_a_whole_deadline(root, tmp_path):
    limits = Limits(bulk_handshake_s=1.0)
    srv = serve(root, port=0, limits=limits)
    open_for: list[float] = []
    stop = threading.Event()

    def dribble() -> None:  # one byte every 0.2 s: each read is quick, the token never completes in time
        with socket.create_connection(("127.0.0.1", srv.servicer.bulk.port)) as s:
            t0 = time.monotonic()
            for _ in range(40):  # 8 s at most
                try:
                    s.sendall(b"x")
                except OSError:
                    break
                if select.select([s], [], [], 0.2)[0] or stop.is_set():  # closed by the server (or the test ends)
                    break
            open_for.append(time.monotonic() - t0)

    threads = [threading.Thread(target=dribble) for _ in range(32)]
    try:
        for t in threads:
            t.start()
        r = fetch(srv.address, "big", tmp_path / "d", limits=limits)
        assert r.accepted and not r.bulk_fallback, r.bulk_fallback
    finally:
        for t in threads:
            t.join(15)
        stop.set()
        srv.stop(0)
    assert len(open_for) == 32 and max(open_for) < 1.0 + 1.5, sorted(open_for)[-3:]


def test_fetches_cancelled_after_the_header_free_their_slots_at_once(root, tmp_path):
    limits = Limits(max_streams=4, bulk_claim_s=60)  # an unused token would hold its slot for a minute
    srv = serve(root, port=0, limits=limits)
    try:
        with grpc.insecure_channel(srv.address) as ch:
            stub = pb2_grpc.PlasmidExchangeStub(ch)
            for _ in range(3):  # 12 requests against 4 slots, each cancelled once its header (and token) arrived
                streams = [stub.Fetch(pb2.FetchRequest(id="legal", bulk=True), timeout=30) for _ in range(4)]
                for s in streams:
                    assert next(s).header.bulk_token
                    s.cancel()
        r = fetch(srv.address, "legal", tmp_path / "d", limits=replace(limits, busy_wait_s=5))
        assert r.accepted and not r.bulk_fallback
    finally:
        srv.stop(0)


class Relay:
    """A loopback TCP relay whose outgoing connections come from ``source`` (another peer address, same host)."""

    def __init__(self, target: tuple[str, int], source: str = "127.0.0.2") -> None:
        self.target, self.source = target, source
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, source_address=(self.source, 0))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        for s in self.conns:
            s.close()


def test_stalled_readers_from_one_peer_leave_slots_for_others(root, tmp_path):
    limits = Limits(max_streams=8, max_streams_per_peer=4, chunk_bytes=16 * 1024)
    srv = serve(root, port=0, limits=limits)
    relay = Relay(("127.0.0.1", srv.port))
    ch = grpc.insecure_channel(relay.address, options=[("grpc.http2.bdp_probe", 0)])  # a small window
    try:
        stub = pb2_grpc.PlasmidExchangeStub(ch)
        stalled, refused = [], 0
        for _ in range(8):  # the attacker (127.0.0.2) reads each header, then stops reading
            stream = stub.Fetch(pb2.FetchRequest(id="big"), timeout=60)
            try:
                next(stream)
                stalled.append(stream)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                refused += 1
        assert (len(stalled), refused) == (4, 4)
        assert srv.servicer.slots.in_use("127.0.0.2") == 4
        for i in range(2):  # 127.0.0.1 still gets the other slots, without waiting
            r = fetch(srv.address, "big", tmp_path / f"d{i}", limits=replace(limits, busy_wait_s=0, bulk=False))
            assert r.accepted
        for stream in stalled:
            stream.cancel()
        wait_for(lambda: srv.servicer.slots.in_use() == 0, 10, "cancelled streams free their slots")
    finally:
        ch.close()
        relay.close()
        srv.stop(0)


def test_client_falls_back_to_grpc_once_when_the_bulk_socket_fails(root, tmp_path):
    srv = serve(root, port=0)
    try:
        srv.servicer.bulk.close()  # the bulk port is gone (a firewall, a crash) while gRPC still offers it
        r = fetch(srv.address, "big", tmp_path / "d")
        assert r.accepted and "bulk transfer" in r.bulk_fallback
        assert (tmp_path / "d" / "big" / "adapter_model.safetensors").stat().st_size == r.size
        wait_for(lambda: srv.servicer.slots.in_use() == 0, 10, "the failed bulk attempt frees its slot")
    finally:
        srv.stop(0)


class _BulkDribbler(pb2_grpc.PlasmidExchangeServicer):
    """A malicious offer server: a valid header that points at a bulk socket sending one byte every 50 ms."""

    def __init__(self, folder: Path) -> None:
        self.files = {p.name: p.read_bytes() for p in folder.iterdir()}
        self.stop = threading.Event()
        self.sent = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.recv(32)  # the token
                while not self.stop.wait(0.05):
                    conn.sendall(b"\0")
                    self.sent += 1

    def _entry(self) -> tuple[bytes, bytes]:
        return self.files["plora.yml"], self.files["adapter_model.safetensors"]

    def GetInventory(self, request, context):
        manifest, art = self._entry()
        return pb2.Inventory(entries=[pb2.InventoryEntry(id="legal", domain="legal", size=len(art),
                                                         sha256=hashlib.sha256(art).hexdigest(), manifest=manifest)])

    def Fetch(self, request, context):
        manifest, art = self._entry()
        yield pb2.FetchChunk(header=pb2.FetchHeader(
            id="legal", manifest=manifest, adapter_config=self.files["adapter_config.json"], size=len(art),
            chunk_size=1 << 20, bulk_port=self.sock.getsockname()[1], bulk_token=b"x" * 32))
        self.stop.wait(60)


def _serve_evil(servicer: pb2_grpc.PlasmidExchangeServicer) -> tuple[grpc.Server, int]:
    """A gRPC server on loopback running a malicious servicer; (server, port)."""
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    pb2_grpc.add_PlasmidExchangeServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    return srv, port


class _Staller(_BulkDribbler):
    """A bulk socket silent after the token, and a gRPC stream (the fallback) silent after its header."""

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.recv(32)
                self.stop.wait(60)

    def Fetch(self, request, context):
        manifest, art = self._entry()
        yield pb2.FetchChunk(header=pb2.FetchHeader(
            id="legal", manifest=manifest, adapter_config=self.files["adapter_config.json"], size=len(art),
            chunk_size=1 << 20, bulk_port=self.sock.getsockname()[1] if request.bulk else 0, bulk_token=b"x" * 32))
        self.stop.wait(60)


def test_a_stalled_bulk_socket_and_its_grpc_fallback_share_one_deadline(root, tmp_path, monkeypatch):
    monkeypatch.setattr("plora.grpc.bulk.STALL_S", 2.0)
    evil = _Staller(root / "legal")
    srv, port = _serve_evil(evil)
    limits = replace(Limits(), fetch_timeout_s=4.0)
    deadline = limits.fetch_deadline((root / "legal" / "adapter_model.safetensors").stat().st_size)
    try:
        t0 = time.monotonic()
        with pytest.raises(TransferError):
            fetch(f"127.0.0.1:{port}", "legal", tmp_path / "d", limits=limits)
        elapsed = time.monotonic() - t0
        # the stall is noticed after 2 s; the fallback gets the time left, not a new deadline (that took ~6 s)
        assert 2.0 < elapsed < deadline + 1.0, (elapsed, deadline)
        assert os.listdir(tmp_path / "d") == []
    finally:
        evil.stop.set()
        evil.sock.close()
        srv.stop(0)


def test_a_dribbling_bulk_socket_cannot_hold_a_fetch_past_its_deadline(root, tmp_path):
    evil = _BulkDribbler(root / "legal")
    srv, port = _serve_evil(evil)
    limits = replace(Limits(), fetch_timeout_s=2.0)
    deadline = limits.fetch_deadline((root / "legal" / "adapter_model.safetensors").stat().st_size)
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fetch(f"127.0.0.1:{port}", "legal", tmp_path / "d", limits=limits)
        except TransferError as err:
            box["error"] = err

    try:
        t0 = time.monotonic()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(deadline + 10)
        elapsed = time.monotonic() - t0
        assert not t.is_alive(), f"the fetch was still receiving {elapsed:.0f} s in ({evil.sent} bytes dribbled)"
        assert "past its deadline" in str(box.get("error")), box
        assert evil.sent > 0 and elapsed < deadline + 3, (evil.sent, elapsed, deadline)
        assert os.listdir(tmp_path / "d") == []
    finally:
        evil.stop.set()
        evil.sock.close()
        srv.stop(0)


class _SwitchingHeaders(_BulkDribbler):
    """A malicious offer server: its bulk attempt names another artifact file and sends the server's own bytes for it,
    then breaks the socket; the gRPC fallback sends the genuine signed plasmid."""

    def __init__(self, folder: Path, planted: str) -> None:
        self.planted = planted
        super().__init__(folder)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.recv(32)
                conn.sendall(b"PLANTED!" * 64)  # fewer bytes than announced: the client falls back to gRPC

    def Fetch(self, request, context):
        art = self.files["adapter_model.safetensors"]
        manifest = self.files["plora.yml"]
        if request.bulk:
            manifest = manifest.replace(b"adapter_model.safetensors", self.planted.encode())
        sigs = [pb2.SignatureFile(name="plora.sig.json", data=self.files["plora.sig.json"])]
        yield pb2.FetchChunk(header=pb2.FetchHeader(
            id="legal", manifest=manifest, adapter_config=self.files["adapter_config.json"], size=len(art),
            chunk_size=1 << 20, bulk_port=self.sock.getsockname()[1] if request.bulk else 0, bulk_token=b"x" * 32,
            signatures=sigs))
        if not request.bulk:
            yield pb2.FetchChunk(data=art)


def test_a_failed_bulk_attempt_leaves_nothing_in_the_plasmid_it_then_fetches(root, tmp_path):
    from plora.signer import generate_keypair, sign_plasmid

    key, pub = generate_keypair("ed25519", tmp_path / "keys" / "alice")
    sign_plasmid(root / "legal", key)
    evil = _SwitchingHeaders(root / "legal", planted="planted.safetensors")
    srv, port = _serve_evil(evil)
    try:
        r = fetch(f"127.0.0.1:{port}", "legal", tmp_path / "d", checks=[signature_check([pub])],
                  size_hint=len(evil.files["adapter_model.safetensors"]))
        assert r.accepted and r.bulk_fallback, (r.reasons, r.bulk_fallback)
        # only what the signed manifest names, received on the attempt that was verified
        assert sorted(os.listdir(tmp_path / "d" / "legal")) == sorted(evil.files), os.listdir(tmp_path / "d" / "legal")
        assert leftovers(tmp_path) == []
    finally:
        evil.sock.close()
        srv.stop(0)


class _PaddedManifest(pb2_grpc.PlasmidExchangeServicer):
    """A malicious offer server whose header carries the plasmid's manifest padded with a YAML comment."""

    def __init__(self, folder: Path, manifest_bytes: int) -> None:
        self.files = {p.name: p.read_bytes() for p in folder.iterdir()}
        manifest = self.files["plora.yml"]
        self.manifest = manifest + b"#" + b"x" * (manifest_bytes - len(manifest) - 2) + b"\n"

    def Fetch(self, request, context):
        art = self.files["adapter_model.safetensors"]
        yield pb2.FetchChunk(header=pb2.FetchHeader(id="legal", manifest=self.manifest, size=len(art),
                                                    adapter_config=self.files["adapter_config.json"]))
        yield pb2.FetchChunk(data=art)


def test_a_manifest_larger_than_the_gate_reads_is_refused_before_parsing(root, tmp_path):
    from plora.manifest import UNTRUSTED_MAX_BYTES

    # PyYAML spends seconds on a large manifest (a 1 MiB one cost 11 s of CPU per fetch): a peer's is capped at what
    # the gate and plora verify read from a stranger
    evil = _PaddedManifest(root / "legal", UNTRUSTED_MAX_BYTES + 1)
    srv, port = _serve_evil(evil)
    try:
        with pytest.raises(TransferError, match=rf"plora.yml of {UNTRUSTED_MAX_BYTES + 1} bytes, over the limit"):
            fetch(f"127.0.0.1:{port}", "legal", tmp_path / "d", size_hint=len(evil.files["adapter_model.safetensors"]))
        assert os.listdir(tmp_path / "d") == []
    finally:
        srv.stop(0)
