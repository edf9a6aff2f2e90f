"""End-to-end plasmid fetch throughput beside a raw loopback socket copy of the same bytes, with peak memory.

    python bench/transfer.py                     # 50 MB artifact, 5 repeats, 256 KiB and 1 MiB chunks
    python bench/transfer.py --size-mb 50 --chunk-kib 256,1024 --repeats 5 --out results/transfer.json

Each row is one path: the bulk socket (the default: header and token over gRPC, bytes over TCP with sendfile) or
the bytes on the gRPC stream itself, each with fsync (durable before the rename: the default) or without (page cache).
The disk line shows what writing the same bytes from memory with fsync costs: the ceiling of any durable fetch.

Servers run in their own processes and report their peak RSS growth during the transfers over their RSS just
before them; the client process alternates one raw copy and one fetch (the same moment, the same process: on a
shared VM both drift with load), and its peak RSS growth shows what a fetch holds (neither side may hold the whole
artifact). The fetch is what ``plora fetch`` does: header over gRPC, bytes into a staging folder with sha256 computed
while receiving (a second thread), write (+ fsync), size and hash compared with the manifest, the Ed25519 signature
checked against a keyring, rename into place. Three raw arms receive the same bytes over a plain TCP socket into a
reused buffer, in the same client process, round-robin with the fetch: "raw" (no hashing, no writing: the ceiling of
Python on this loopback), "raw + SHA-256" (hashing each chunk as it arrives) and "raw + SHA-256 + write" (also
writing it to a file in the destination, fsync'd when the row's fetch fsyncs). The last is the least a verified
fetch must do, in one thread; the fetch is reported against all three.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_args import Parser, positive_float, positive_int, positive_int_list

MIB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across fork+exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def make_plasmid(root: Path, size_mb: float) -> tuple[Path, Path | None]:
    import numpy as np

    from plora.manifest import now_utc
    from plora.plasmid import write_plasmid

    cols = 256
    rows = max(1, int(size_mb * 1e6 / 4 / cols))
    rng = np.random.default_rng(0)
    tensors = {
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": rng.standard_normal((4, cols), dtype=np.float32),
        "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": rng.standard_normal((rows, cols),
                                                                                          dtype=np.float32),
    }
    folder = root / "bulk"
    write_plasmid(folder, tensors, {"peft_type": "LORA", "r": 4}, plasmid_id="bulk", domain="legal",
                  created_at=now_utc(), base_model={"name": "plora-tiny", "digest": "0" * 64},
                  lora={"r": 4, "alpha": 8, "target_set": "attention", "targets": ["c_attn"]},
                  training={"seed": 0, "samples": 0, "epochs": 0, "dataset": "builtin:legal"})
    try:
        from plora.signer import generate_keypair, sign_plasmid
    except ImportError:
        return folder, None
    key = root / "keys" / "bench"
    generate_keypair("ed25519", key)
    sign_plasmid(folder, key)
    return folder, key.parent


def serve_grpc(root: str, chunk: int) -> None:
    from plora.grpc.limits import Limits
    from plora.grpc.server import serve

    server = serve(root, port=0, limits=Limits(chunk_bytes=chunk))
    base = rss_bytes()
    print(server.port, flush=True)
    sys.stdin.read()  # the parent closes stdin when done
    server.stop(0)
    print(json.dumps({"peak_growth": peak_rss_bytes() - base}), flush=True)


def serve_raw(path: str, chunk: int) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    base = rss_bytes()
    print(sock.getsockname()[1], flush=True)
    buf = bytearray(chunk)
    while True:
        conn, _ = sock.accept()
        with conn, open(path, "rb", buffering=0) as fh:
            if conn.recv(1) != b"G":
                break
            while n := fh.readinto(buf):
                conn.sendall(memoryview(buf)[:n])
    print(json.dumps({"peak_growth": peak_rss_bytes() - base}), flush=True)


def cpu_s() -> float:
    """CPU seconds of this process, all threads: a cost that does not depend on how busy the machine is."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


RAW_ARMS = ("raw", "raw + SHA-256", "raw + SHA-256 + write")


def raw_copy(port: int, size: int, chunk: int, sha: bool = False, write_to: Path | None = None,
             fsync: bool = False) -> dict:
    """Receive the bytes into a reused buffer; optionally hash each chunk and write it to ``write_to``."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    h = hashlib.sha256() if sha else None
    c0 = cpu_s()
    t0 = time.perf_counter()
    fh = open(write_to, "wb", buffering=0) if write_to is not None else None  # noqa: SIM115 - closed below
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"G")
            got = 0
            while n := s.recv_into(buf):
                got += n
                if h is not None:
                    h.update(view[:n])
                if fh is not None:
                    fh.write(view[:n])
        if fh is not None and fsync:
            os.fsync(fh.fileno())
    finally:
        if fh is not None:
            fh.close()
    seconds = time.perf_counter() - t0
    if write_to is not None:
        write_to.unlink()
    if got != size:
        raise SystemExit(f"raw copy got {got} of {size} bytes")
    return {"seconds": seconds, "bytes": got, "cpu_s": cpu_s() - c0}


def client(addr: str, raw_port: int, size: int, dest: str, chunk: int, repeats: int, keys: str | None, bulk: bool,
           fsync: bool) -> None:
    """Alternate a raw copy and a fetch in ONE process: on a shared VM the speed of both drifts with the load and
    with how awake the process's threads are, so only side-by-side runs compare."""
    from plora.grpc.checks import signature_check
    from plora.grpc.client import fetch
    from plora.grpc.limits import Limits

    checks = [signature_check([keys])] if keys else []
    limits = Limits(chunk_bytes=chunk, bulk=bulk, fsync=fsync)
    base = rss_bytes()
    runs: list[dict] = []
    raws: dict[str, list[dict]] = {arm: [] for arm in RAW_ARMS}
    for i in range(repeats + 1):  # the first round warms up (imports, connection) and is not counted
        shutil.rmtree(Path(dest) / "bulk", ignore_errors=True)
        raw = {"raw": raw_copy(raw_port, size, chunk),
               "raw + SHA-256": raw_copy(raw_port, size, chunk, sha=True),
               "raw + SHA-256 + write": raw_copy(raw_port, size, chunk, sha=True, write_to=Path(dest) / "raw.bin",
                                                 fsync=fsync)}
        c0 = cpu_s()
        t0 = time.perf_counter()
        r = fetch(addr, "bulk", dest, checks=checks, limits=limits)
        total = time.perf_counter() - t0
        cpu = cpu_s() - c0
        if not r.accepted:
            raise SystemExit(f"fetch refused: {r.reasons}")
        if i:
            runs.append({"seconds": total, "receive_s": r.receive_s, "check_s": r.check_s, "bytes": r.size,
                         "cpu_s": cpu})
            for arm in RAW_ARMS:
                raws[arm].append(raw[arm])
    print(json.dumps({"runs": runs, "raw_runs": raws, "peak_growth": peak_rss_bytes() - base,
                      "verified_signature": bool(keys)}))


def disk_ceiling(path: str, dest: str, repeats: int) -> None:
    """Write the same bytes from memory and fsync them: what the disk allows a durable fetch."""
    data = Path(path).read_bytes()
    runs = []
    for _ in range(repeats):
        target = Path(dest) / "ceiling.bin"
        t0 = time.perf_counter()
        with open(target, "wb", buffering=0) as fh:
            view = memoryview(data)
            for off in range(0, len(data), MIB):
                fh.write(view[off:off + MIB])
            os.fsync(fh.fileno())
        runs.append({"seconds": time.perf_counter() - t0, "bytes": len(data)})
        target.unlink()
    print(json.dumps({"runs": runs}))


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _run_role(role: str, spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--role", role, "--args", json.dumps(spec)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _mbps(runs: list[dict]) -> float:
    return statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in runs)


def main() -> None:
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=positive_float, default=50.0)
    ap.add_argument("--chunk-kib", type=positive_int_list, default="256,1024",
                    help="comma-separated chunk sizes to compare")
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--out", default="results/transfer.json")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--args", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role != "main":
        spec = json.loads(a.args)
        {"grpc-server": serve_grpc, "raw-server": serve_raw, "client": client, "disk": disk_ceiling}[a.role](**spec)
        return
    from rich.console import Console
    from rich.table import Table

    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="plora-bench-transfer-"))
    try:
        folder, keys = make_plasmid(work / "root", a.size_mb)
        art = folder / "adapter_model.safetensors"
        size = art.stat().st_size
        rows = []
        (work / "dest").mkdir()
        modes = [("bulk socket, fsync", True, True), ("bulk socket, page cache", True, False),
                 ("gRPC stream, fsync", False, True), ("gRPC stream, page cache", False, False)]
        disk = _run_role("disk", {"path": str(art), "dest": str(work / "dest"), "repeats": a.repeats})
        for chunk in [c * 1024 for c in a.chunk_kib]:
            raw_srv = _spawn("--role", "raw-server", "--args", json.dumps({"path": str(art), "chunk": chunk}))
            port = int(raw_srv.stdout.readline())
            g_srv = _spawn("--role", "grpc-server", "--args", json.dumps({"root": str(work / "root"), "chunk": chunk}))
            gport = int(g_srv.stdout.readline())
            for label, bulk, fsync in modes:
                fetched = _run_role("client", {
                    "addr": f"127.0.0.1:{gport}", "raw_port": port, "size": size, "dest": str(work / "dest"),
                    "chunk": chunk, "repeats": a.repeats, "keys": str(keys) if keys else None, "bulk": bulk,
                    "fsync": fsync})
                raws = fetched["raw_runs"]
                fetch_mbps = _mbps(fetched["runs"])
                rows.append({
                    "chunk_bytes": chunk, "mode": label, "artifact_bytes": size,
                    "raw_MBps": _mbps(raws["raw"]), "raw_sha_MBps": _mbps(raws["raw + SHA-256"]),
                    "raw_sha_write_MBps": _mbps(raws["raw + SHA-256 + write"]), "raw_write_fsync": fsync,
                    "fetch_MBps": fetch_mbps,
                    "fetch_best_MBps": max(r["bytes"] / r["seconds"] / 1e6 for r in fetched["runs"]),
                    "client_cpu_ms": {**{arm: 1e3 * statistics.median(r["cpu_s"] for r in raws[arm])
                                         for arm in RAW_ARMS},
                                      "fetch": 1e3 * statistics.median(r["cpu_s"] for r in fetched["runs"])},
                    "ratio": fetch_mbps / _mbps(raws["raw"]),
                    "ratio_vs_raw_sha": fetch_mbps / _mbps(raws["raw + SHA-256"]),
                    "ratio_vs_raw_sha_write": fetch_mbps / _mbps(raws["raw + SHA-256 + write"]),
                    "disk_write_fsync_MBps": _mbps(disk["runs"]),
                    "verified_signature": fetched["verified_signature"],
                    "peak_MB": {"fetch_client": fetched["peak_growth"] / 1e6},
                    "raw_runs": raws, "fetch_runs": fetched["runs"],
                })
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"Q")
            raw_srv_mem = json.loads(raw_srv.communicate()[0].strip().splitlines()[-1])
            g_srv_mem = json.loads(g_srv.communicate("")[0].strip().splitlines()[-1])
            for row in rows:
                if row["chunk_bytes"] == chunk:
                    row["peak_MB"]["grpc_server"] = g_srv_mem["peak_growth"] / 1e6
                    row["peak_MB"]["raw_server"] = raw_srv_mem["peak_growth"] / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import grpc
    from machine_info import cpu_model

    load_end = os.getloadavg()
    machine = {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version(), "grpcio": grpc.__version__,
               "load_avg_start": list(load_start), "load_avg_end": list(load_end)}
    table = Table(title=f"fetch of a {size / 1e6:.1f} MB plasmid over loopback (median of {a.repeats})")
    for col in ("chunk", "path", "raw / +SHA / +SHA+write MB/s", "fetch MB/s",
                "fetch / raw, / +SHA, / +SHA+write", "best fetch MB/s", "client CPU ms raw / +SHA / +SHA+write / fetch",
                "peak MB gRPC server / fetch client", "raw server peak MB"):
        table.add_column(col, justify="right")
    for r in rows:
        p = r["peak_MB"]
        cpu = r["client_cpu_ms"]
        table.add_row(f"{r['chunk_bytes'] // 1024} KiB", r["mode"],
                      f"{r['raw_MBps']:.0f} / {r['raw_sha_MBps']:.0f} / {r['raw_sha_write_MBps']:.0f}",
                      f"{r['fetch_MBps']:.0f}",
                      f"{r['ratio']:.0%} / {r['ratio_vs_raw_sha']:.0%} / {r['ratio_vs_raw_sha_write']:.0%}",
                      f"{r['fetch_best_MBps']:.0f}",
                      " / ".join(f"{cpu[k]:.0f}" for k in (*RAW_ARMS, "fetch")),
                      f"{p['grpc_server']:.1f} / {p['fetch_client']:.1f}", f"{p['raw_server']:.1f}")
    console = Console(width=180)
    console.print(table)
    console.print(f"disk: write + fsync of the same bytes from memory {_mbps(disk['runs']):.0f} MB/s (the ceiling of "
                  f"a durable fetch); fetch = stream + sha256 while receiving + write + size/hash check"
                  + (" + Ed25519 signature check" if keys else "") + " + rename")
    console.print("raw + SHA-256 + write fsyncs in the fsync rows, not in the page-cache rows; all raw arms "
                  "single-threaded in the fetch client's process, round-robin with its fetches")
    console.print(f"machine: {machine['cpu']}, {machine['cpus']} cpus, {machine['platform']}, python "
                  f"{machine['python']}, grpcio {machine['grpcio']}; load average at start "
                  + " / ".join(f"{x:.2f}" for x in load_start) + ", at end " + " / ".join(f"{x:.2f}" for x in load_end))
    out = Path(a.out)
    from plora.fsio import atomic_write_json

    atomic_write_json(out, {"machine": machine, "size_mb": a.size_mb, "repeats": a.repeats, "rows": rows})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
