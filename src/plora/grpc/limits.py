"""Limits every offer server and fetch client enforces, and the one check that turns a requested id into a folder.

    >>> from plora.grpc.limits import Limits, check_id
    >>> Limits().chunk_bytes
    1048576
    >>> check_id("legal")
    'legal'

Ids are matched against a strict pattern and then looked up in the server's index of folders it found under its
root: a request never becomes a path, so ``../etc`` or ``a/b`` cannot reach outside the served root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plora.errors import TransferError
from plora.manifest import UNTRUSTED_MAX_BYTES

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Knobs of one server or client. Defaults suit plasmids of up to a few hundred MB on a LAN."""

    # artifact bytes per gRPC message, and per receive buffer on the bulk path. bench/transfer.py: 256 KiB and 1 MiB
    # give the same MB/s within the noise of a shared machine; 1 MiB costs the client ~10% less CPU (91-100 vs
    # 103-126 ms per 50 MB), 256 KiB half the memory (8 vs 15 MB); both far below the artifact
    chunk_bytes: int = MIB
    max_message_bytes: int = 8 * MIB  # gRPC message cap: a header holds manifest + adapter_config
    # a manifest from a peer is parsed before anything else is checked, and PyYAML needs seconds for a large one
    # (11 s of CPU per 1 MiB fetch header): the cap the gate and plora verify put on a stranger's manifest
    max_manifest_bytes: int = UNTRUSTED_MAX_BYTES
    max_config_bytes: int = MIB
    max_signature_bytes: int = MIB  # per detached signature file (plora.sig.json, model.sig)
    max_artifact_bytes: int = 2048 * MIB
    max_streams: int = 64  # concurrent Fetch streams per server; more get RESOURCE_EXHAUSTED
    # ... and per client IP, so that one peer cannot hold every slot (clients retry a busy server: busy_wait_s)
    max_streams_per_peer: int = 16
    # Offers a swarm agent handles at once (each may fetch and screen for minutes), in all and per sender (a peer's
    # advertised address, else the caller's IP): a peer flooding Offers cannot take the threads that serve Fetch and
    # GetInventory. More get RESOURCE_EXHAUSTED, which an agent's push retries for busy_wait_s
    max_offers: int = 32
    max_offers_per_peer: int = 2
    # server side: a Fetch stream (or bulk transfer) still open after min(this, fetch_deadline(size)) is cancelled
    stream_timeout_s: float = 300.0
    inventory_timeout_s: float = 10.0  # client deadline of GetInventory / Offer
    fetch_timeout_s: float = 30.0  # client deadline of a Fetch, plus size / min_rate_bytes_s
    min_rate_bytes_s: float = 5 * MIB
    max_inventory_entries: int = 4096
    max_revocations: int = 1024  # revocation ids listed in an inventory, and envelopes in one GetRevocations reply
    queue_chunks: int = 8  # chunks buffered between receiving and hashing+writing (bounds client memory)
    fsync: bool = True  # make the artifact durable before the rename (flushed in the background while receiving)
    bulk: bool = True  # artifact bytes over a plain TCP socket beside gRPC (plaintext servers; see plora.grpc.bulk)
    bulk_claim_s: float = 10.0  # a bulk token not used within this is dropped
    bulk_handshake_s: float = 5.0  # a bulk connection must send its whole token within this of being accepted
    busy_wait_s: float = 10.0  # client: how long to keep retrying a server that answers RESOURCE_EXHAUSTED

    def fetch_deadline(self, size: int) -> float:
        return self.fetch_timeout_s + size / self.min_rate_bytes_s

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            # a peer that was down must be retried within a round, not after gRPC's default backoff (up to 120 s)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]

    def server_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_concurrent_streams", self.max_streams + self.max_offers + 16),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_connection_idle_ms", 600_000),
            ("grpc.so_reuseport", 0),
        ]


def check_id(plasmid_id: str) -> str:
    """The id itself if it is a plain plasmid id (letters, digits, ``. _ -``, no ``..``), else TransferError."""
    if not isinstance(plasmid_id, str) or not ID_PATTERN.fullmatch(plasmid_id) or ".." in plasmid_id:
        raise TransferError(f"invalid plasmid id {plasmid_id!r}: expected letters, digits, '.', '_' or '-' (<=128)")
    return plasmid_id


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); TransferError otherwise."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise TransferError(f"invalid address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)
