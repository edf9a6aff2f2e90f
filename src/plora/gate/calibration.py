"""Gate calibrations: one versioned file per base weights digest, the only place the detectors' yardsticks live.

    >>> from plora.models import base_digest
    >>> from plora.gate.calibration import find_calibration
    >>> cal = find_calibration(base_digest("plora-tiny"))    # the shipped one: none is installed here
    >>> cal.base_model, cal.statistic, sorted(cal.thresholds.model_dump())
    ('plora-tiny', 'answer_info_share', ['clean_delta', 'norm_z', 'trigger'])
    >>> find_calibration("0" * 64) is None                    # an unknown base digest: no yardstick at all
    True

A calibration holds everything a screening compares against: the thresholds, the statistic the trigger score is read
from, the probe version, seed and config it was measured with, the clean weight reference per plasmid shape, and
where it came from (the gate-eval cohort's spec and digest, the date, the commit). It is made by ``plora gate-eval``
(which writes it into its output folder and nowhere else) and takes effect only when installed:

    plora calibration install results/gate_eval/calibration.json     # for this machine (PLORA_HOME)
    plora calibration show --base-model plora-tiny

Lookup for a base digest: the installed file ``PLORA_HOME/gate/calibrations/<digest>.json``, else the one shipped in
``plora/assets/gate/calibrations/<digest>.json``, else none. A base with none is never scored against another base's
yardstick: the gate's ``calibration`` stage refuses (``BASE_UNCALIBRATED``) unless the policy says otherwise. The file
is strict JSON (pydantic, unknown fields refused); its :meth:`Calibration.digest` (SHA-256 of the canonical form) keys
every cached verdict, so a recalibration never reuses a verdict made under the old one.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from plora.errors import PloraError, first_validation_error

CALIBRATION_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "gate" / "calibrations"
_DIGEST = r"^[0-9a-f]{64}$"
# What a calibration may name, kept here so that reading one needs no torch: the statistics are the variants
# ``plora.gate.probes._variants`` reports, the config keys the fields of ``plora.gate.probes.ProbeConfig``
# (tests/test_detectors.py checks both against the probe itself).
PROBE_STATISTICS = ("scan_max", "scan_top5", "verify_gain", "verify_flip", "verify_log_ratio", "search_gain",
                    "answer_info", "answer_info_share", "answer_p_gain")
PROBE_CONFIG_FIELDS = ("scan_prompts", "verify_prompts", "candidates", "targets", "extend_pool", "keep_pairs",
                       "nll_items_per_domain")


class CalibrationError(PloraError):
    """A calibration file that cannot be read or breaks the schema."""


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger: float = Field(allow_inf_nan=False, description="reject above this trigger score")
    norm_z: float = Field(allow_inf_nan=False, description="reject above this weight-anomaly robust z")
    clean_delta: float = Field(allow_inf_nan=False, description="reject above this clean-probe NLL increase (nats)")


class Calibration(BaseModel):
    """The gate's yardsticks for one base (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["plora-gate-calibration"] = "plora-gate-calibration"
    version: Literal[1] = 1
    base_model: str = Field(min_length=1)
    base_digest: str = Field(pattern=_DIGEST)
    probe_version: int
    statistic: str = Field(min_length=1)
    probe_seed: int
    probe_config: dict[str, StrictInt]
    thresholds: Thresholds
    weight_reference: dict[str, Any]
    cohort: dict[str, Any] = Field(default_factory=dict)
    created: str
    commit: str = ""
    notes: str = ""

    @field_validator("statistic")
    @classmethod
    def _known_statistic(cls, v: str) -> str:
        if v not in PROBE_STATISTICS:
            raise ValueError(f"unknown statistic {v!r} (the probe reports {', '.join(PROBE_STATISTICS)})")
        return v

    @field_validator("probe_config")
    @classmethod
    def _probe_fields(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(v) - set(PROBE_CONFIG_FIELDS))
        if unknown:
            raise ValueError(f"unknown probe setting {unknown[0]!r} (expected {', '.join(PROBE_CONFIG_FIELDS)})")
        low = [k for k, n in v.items() if n < (0 if k == "candidates" else 1)]
        if low:
            raise ValueError(f"probe setting {low[0]} = {v[low[0]]} is too small")
        return v

    @field_validator("weight_reference")
    @classmethod
    def _reference(cls, v: dict[str, Any]) -> dict[str, Any]:
        from plora.gate.reference import check_reference_json

        check_reference_json(v)
        return v

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def weights(self) -> Any:
        """The clean weight reference as a :class:`plora.gate.reference.WeightReference`."""
        from plora.gate.reference import WeightReference

        return WeightReference.from_json(self.weight_reference, source=f"calibration {self.digest()[:12]}")


MAX_CALIBRATION_BYTES = 16 << 20  # a calibration with a weight reference per rank and module is ~100 KB


def installed_dir() -> Path:
    from plora.settings import cache_dir

    return cache_dir("gate", "calibrations")


def read_calibration(path: str | Path) -> Calibration:
    from plora.fsio import read_bounded

    path = Path(path)
    raw = read_bounded(path, MAX_CALIBRATION_BYTES, "calibration file", CalibrationError)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CalibrationError(f"{path}: cannot read calibration ({err})") from None
    except ValueError as err:
        raise CalibrationError(f"{path}: malformed JSON ({err})") from None
    try:
        return Calibration.model_validate(data)
    except ValidationError as err:
        raise CalibrationError(f"{path}: {first_validation_error(err, '<root>')}") from None


def find_calibration(base_digest: str) -> Calibration | None:
    """The installed calibration for this base digest, else the shipped one, else None (never another base's)."""
    for folder in (installed_dir(), SHIPPED_DIR):
        path = folder / f"{base_digest}.json"
        if path.is_file():
            cal = read_calibration(path)
            if cal.base_digest != base_digest:
                raise CalibrationError(
                    f"{path}: names base digest {cal.base_digest[:16]}..., not {base_digest[:16]}..."
                )
            return cal
    return None


def write_calibration(cal: Calibration, path: str | Path) -> Path:
    from plora.fsio import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(cal.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")


def install_calibration(path: str | Path, *, into_package: bool = False, force: bool = False) -> Path:
    """Validate ``path`` and install it for its base: under PLORA_HOME (this machine), or into the package's shipped
    calibrations (for a developer preparing a release). Another calibration already there for that base is replaced
    only with ``force``; the same one again changes nothing."""
    cal = read_calibration(path)
    stale = stale_probe(cal)
    if stale:
        raise CalibrationError(f"{path}: the gate cannot use this calibration: {stale}")
    if not cal.weight_reference.get("entries"):
        raise CalibrationError(f"{path}: its weight reference is empty: the gate would refuse every plasmid "
                               "(SHAPE_UNCALIBRATED)")
    from plora.fsio import folder_lock

    folder = SHIPPED_DIR if into_package else installed_dir()
    target = folder / f"{cal.base_digest}.json"
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):  # two installs at once: the second sees the first's, as if it had run after it
        if target.exists() or target.is_symlink():
            try:
                same = read_calibration(target).digest() == cal.digest()
            except CalibrationError:
                same = False
            if same:
                return target
            if not force:
                raise CalibrationError(
                    f"{target}: another calibration is installed for base {cal.base_model} "
                    f"({cal.base_digest[:16]}...); pass --force to replace it"
                )
        return write_calibration(cal, target)


def probe_constants() -> dict[str, Any]:
    """PROBE_VERSION and STATISTIC of plora.gate.probes, read from its source when it is not imported yet: the
    probes import torch, and an agent that never screens must not pay for it."""
    loaded = sys.modules.get("plora.gate.probes")
    if loaded is not None:
        return {"PROBE_VERSION": loaded.PROBE_VERSION, "STATISTIC": loaded.STATISTIC}
    spec = importlib.util.find_spec("plora.gate.probes")
    if spec is None or spec.origin is None:
        raise ImportError("plora.gate.probes not found")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in {"PROBE_VERSION", "STATISTIC"}:
                out[node.targets[0].id] = ast.literal_eval(node.value)
    if set(out) != {"PROBE_VERSION", "STATISTIC"}:
        raise ImportError(f"{spec.origin}: PROBE_VERSION or STATISTIC is not a plain constant")
    return out


def stale_probe(cal: Calibration) -> str | None:
    """Why ``cal``'s trigger threshold does not apply to this plora's probe (None when it does)."""
    PROBE_VERSION = probe_constants()["PROBE_VERSION"]  # noqa: N806 - the probe's constant, read without torch
    if cal.probe_version != PROBE_VERSION:
        return (f"it was measured with probe v{cal.probe_version}, this plora's probe is v{PROBE_VERSION}: "
                f"make a new one with plora gate-eval --base-model {cal.base_model}, then plora calibration install")
    return None


def remove_installed(base_digest: str) -> bool:
    path = installed_dir() / f"{base_digest}.json"
    if path.is_file():
        path.unlink()
        return True
    return False
