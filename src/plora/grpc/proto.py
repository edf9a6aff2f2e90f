"""The generated plasmid.proto stubs, regenerated from the .proto when missing (a fresh clone before `make stubs`).

    >>> from plora.grpc.proto import pb2, pb2_grpc
    >>> pb2.FetchRequest(id="legal").id
    'legal'

The generated files are not committed (.gitignore): `make setup` runs ``python -m plora.grpc.stubs``, and importing
this module runs the same generator if they are absent, so stubs always match the .proto of the checkout.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("plora.grpc.plasmid_pb2", "plora.grpc.plasmid_pb2_grpc")


def _load() -> tuple[ModuleType, ModuleType]:
    try:
        return importlib.import_module(NAMES[0]), importlib.import_module(NAMES[1])
    except ImportError:
        from plora.grpc.stubs import generate

        generate()
        importlib.invalidate_caches()
        return importlib.import_module(NAMES[0]), importlib.import_module(NAMES[1])


pb2, pb2_grpc = _load()
