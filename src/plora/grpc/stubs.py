"""Generate the Python stubs from the .proto files in this package (run by ``make setup``).

python -m plora.grpc.stubs
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent


def generate() -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(HERE.glob("*.proto"))
    for proto in protos:
        rel = proto.relative_to(SRC)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{SRC}",
                f"--python_out={SRC}",
                f"--pyi_out={SRC}",
                f"--grpc_python_out={SRC}",
                str(rel),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {rel}")
    return protos


if __name__ == "__main__":
    done = generate()
    print(f"generated stubs for {len(done)} proto file(s)", file=sys.stderr)
