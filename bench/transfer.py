"""End-to-end plasmid fetch throughput beside a raw loopback socket copy of the same bytes, with peak memory.

    python bench/transfer.py                     # 50 MB artifact, 3 repeats, 1 MiB chunks
    python bench/transfer.py --size-mb 50 --chunk-kib 256,1024 --repeats 5 --out results/transfer.json

Every side runs in its own process (server and client of each kind), so each reports its own memory: peak RSS
growth during the transfers over its RSS just before them (neither side may hold the whole artifact). The fetch is
what ``plora fetch`` does: stream into a staging folder, sha256 while receiving (a second thread), write + fsync,
compare size and hash with the manifest, verify the signature (Ed25519, re-hashing the staged artifact) when
plora.signer is available, and rename into place. The raw copy receives the same bytes over a plain TCP socket into
a reused buffer (no hashing, no writing): the ceiling of Python on this loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def client_grpc(addr: str, dest: str, chunk: int, repeats: int, keys: str | None) -> None:
    from plora.grpc.client import fetch, signature_check
    from plora.grpc.limits import Limits

    checks = [signature_check([keys])] if keys else []
    limits = Limits(chunk_bytes=chunk)
    base = rss_bytes()
    runs = []
    for _ in range(repeats):
        shutil.rmtree(Path(dest) / "bulk", ignore_errors=True)
        t0 = time.perf_counter()
        r = fetch(addr, "bulk", dest, checks=checks, limits=limits)
        total = time.perf_counter() - t0
        if not r.accepted:
            raise SystemExit(f"fetch refused: {r.reasons}")
        runs.append({"seconds": total, "receive_s": r.receive_s, "check_s": r.check_s, "bytes": r.size})
    print(json.dumps({"runs": runs, "peak_growth": peak_rss_bytes() - base, "verified_signature": bool(keys)}))


def client_raw(port: int, size: int, chunk: int, repeats: int) -> None:
    buf = bytearray(chunk)
    base = rss_bytes()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"G")
            got = 0
            while n := s.recv_into(buf):
                got += n
        runs.append({"seconds": time.perf_counter() - t0, "bytes": got})
        if got != size:
            raise SystemExit(f"raw copy got {got} of {size} bytes")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"Q")
    print(json.dumps({"runs": runs, "peak_growth": peak_rss_bytes() - base}))


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _mbps(runs: list[dict]) -> float:
    return statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=50.0)
    ap.add_argument("--chunk-kib", default="1024", help="comma-separated chunk sizes to compare")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/transfer.json")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--args", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role != "main":
        spec = json.loads(a.args)
        {"grpc-server": serve_grpc, "raw-server": serve_raw, "grpc-client": client_grpc,
         "raw-client": client_raw}[a.role](**spec)
        return
    from rich.console import Console
    from rich.table import Table

    work = Path(tempfile.mkdtemp(prefix="plora-bench-transfer-"))
    try:
        folder, keys = make_plasmid(work / "root", a.size_mb)
        art = folder / "adapter_model.safetensors"
        size = art.stat().st_size
        rows = []
        for chunk in [int(c) * 1024 for c in a.chunk_kib.split(",")]:
            raw_srv = _spawn("--role", "raw-server", "--args", json.dumps({"path": str(art), "chunk": chunk}))
            port = int(raw_srv.stdout.readline())
            raw = json.loads(subprocess.run(
                [sys.executable, __file__, "--role", "raw-client", "--args",
                 json.dumps({"port": port, "size": size, "chunk": chunk, "repeats": a.repeats})],
                check=True, capture_output=True, text=True).stdout)
            raw_srv_mem = json.loads(raw_srv.communicate()[0].strip().splitlines()[-1])
            g_srv = _spawn("--role", "grpc-server", "--args", json.dumps({"root": str(work / "root"), "chunk": chunk}))
            gport = int(g_srv.stdout.readline())
            fetched = json.loads(subprocess.run(
                [sys.executable, __file__, "--role", "grpc-client", "--args",
                 json.dumps({"addr": f"127.0.0.1:{gport}", "dest": str(work / "dest"), "chunk": chunk,
                             "repeats": a.repeats, "keys": str(keys) if keys else None})],
                check=True, capture_output=True, text=True).stdout)
            g_srv_mem = json.loads(g_srv.communicate("")[0].strip().splitlines()[-1])
            rows.append({
                "chunk_bytes": chunk, "artifact_bytes": size,
                "raw_MBps": _mbps(raw["runs"]), "fetch_MBps": _mbps(fetched["runs"]),
                "fetch_receive_MBps": statistics.median(size / r["receive_s"] / 1e6 for r in fetched["runs"]),
                "ratio": _mbps(fetched["runs"]) / _mbps(raw["runs"]),
                "verified_signature": fetched["verified_signature"],
                "peak_MB": {"raw_server": raw_srv_mem["peak_growth"] / 1e6, "raw_client": raw["peak_growth"] / 1e6,
                            "grpc_server": g_srv_mem["peak_growth"] / 1e6,
                            "fetch_client": fetched["peak_growth"] / 1e6},
                "raw_runs": raw["runs"], "fetch_runs": fetched["runs"],
            })
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_avg_1m": os.getloadavg()[0]}
    table = Table(title=f"fetch of a {size / 1e6:.1f} MB plasmid over loopback (median of {a.repeats})")
    for col in ("chunk", "raw copy MB/s", "fetch MB/s", "fetch/raw", "receive-only MB/s", "peak MB srv/cli (fetch)",
                "peak MB srv/cli (raw)"):
        table.add_column(col, justify="right")
    for r in rows:
        p = r["peak_MB"]
        table.add_row(f"{r['chunk_bytes'] // 1024} KiB", f"{r['raw_MBps']:.0f}", f"{r['fetch_MBps']:.0f}",
                      f"{r['ratio']:.0%}", f"{r['fetch_receive_MBps']:.0f}",
                      f"{p['grpc_server']:.1f} / {p['fetch_client']:.1f}",
                      f"{p['raw_server']:.1f} / {p['raw_client']:.1f}")
    console = Console()
    console.print(table)
    console.print(f"machine: {machine['cpus']} cpus, {machine['platform']}, load {machine['load_avg_1m']:.2f}")
    out = Path(a.out)
    from plora.fsio import atomic_write_json

    atomic_write_json(out, {"machine": machine, "size_mb": a.size_mb, "repeats": a.repeats, "rows": rows})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
