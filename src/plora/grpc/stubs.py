"""Generate the Python stubs from the .proto files in this package (run by ``make setup`` / ``make stubs``).

    python -m plora.grpc.stubs

The generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` are not committed (.gitignore): they are rebuilt
here, and :mod:`plora.grpc.proto` rebuilds them on import when they are missing or older than the .proto.
tests/test_grpc.py checks that the stubs in the tree equal a fresh generation.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent


def generate(out: Path | None = None) -> list[Path]:
    """Run protoc on every .proto here; write into ``out`` (a source root, default this checkout's src/)."""
    from grpc_tools import protoc

    out = Path(out) if out is not None else SRC
    protos = sorted(HERE.glob("*.proto"))
    for proto in protos:
        rel = proto.relative_to(SRC)
        (out / rel.parent).mkdir(parents=True, exist_ok=True)
        code = protoc.main(
            ["grpc_tools.protoc", f"-I{SRC}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
             str(rel)]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {rel}")
    return protos


def stale() -> bool:
    """True when a generated stub is missing or older than its .proto."""
    for proto in HERE.glob("*.proto"):
        stem = proto.with_suffix("")
        outs = [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2_grpc.py")]
        if any(not o.exists() or o.stat().st_mtime < proto.stat().st_mtime for o in outs):
            return True
    return False


if __name__ == "__main__":
    done = generate()
    print(f"generated stubs for {len(done)} proto file(s)", file=sys.stderr)
