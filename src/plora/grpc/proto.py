"""The generated plasmid.proto stubs, regenerated from the .proto when missing or stale.

    >>> from plora.grpc.proto import pb2, pb2_grpc
    >>> pb2.FetchRequest(id="legal").id
    'legal'

The generated files are not committed (.gitignore): `make setup` runs ``python -m plora.grpc.stubs``, and importing
this module runs the same generator first when they are absent or older than the .proto (a fresh clone, an edited
.proto), so the stubs in use always match the .proto of the checkout.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from plora.grpc import stubs

NAMES = ("plora.grpc.plasmid_pb2", "plora.grpc.plasmid_pb2_grpc")


def _load() -> tuple[ModuleType, ModuleType]:
    if stubs.stale():
        stubs.generate()
        importlib.invalidate_caches()
    return importlib.import_module(NAMES[0]), importlib.import_module(NAMES[1])


if TYPE_CHECKING:  # type checkers read the generated modules (and plasmid_pb2.pyi) directly
    from plora.grpc import plasmid_pb2 as pb2
    from plora.grpc import plasmid_pb2_grpc as pb2_grpc
else:
    pb2, pb2_grpc = _load()
