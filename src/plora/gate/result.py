"""What the gate returns: a :class:`GateResult` (verdict, reasons, one :class:`CheckRecord` per stage, scores).

    >>> from plora.gate.result import CheckRecord, GateResult
    >>> result = GateResult("received/legal", False, [("ARTIFACT_SHA_MISMATCH", "hash mismatch")],
    ...                     [CheckRecord("schema", True, 0.01)], {"norm_z": None}, 0.02)
    >>> result.reason_codes
    ['ARTIFACT_SHA_MISMATCH']
    >>> result.to_dict()["reasons"]
    [{'code': 'ARTIFACT_SHA_MISMATCH', 'message': 'hash mismatch'}]

:func:`plora.gate.screen` builds it, stage by stage; ``to_json`` is what ``plora gate --json`` prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ReasonPair = tuple[str, str]


@dataclass
class CheckRecord:
    name: str
    passed: bool | None  # None: the stage did not run
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateResult:
    folder: str
    accepted: bool
    reasons: list[ReasonPair]
    checks: list[CheckRecord]
    scores: dict[str, float | None]
    seconds: float

    @property
    def reason_codes(self) -> list[str]:
        return [c for c, _ in self.reasons]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = [{"code": c, "message": m} for c, m in self.reasons]
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)
