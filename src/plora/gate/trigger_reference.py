"""Clean reference for the trigger scan: per base and per measured home domain, where clean plasmids' scores lie.

    >>> from plora.gate.trigger_reference import build_trigger_reference, load_trigger_reference
    >>> ref = build_trigger_reference({"legal": [0.02, 0.03, 0.05]}, digest, "consensus_topk", 3)  # doctest: +SKIP
    >>> ref.normalise(0.04, "legal")                                                  # doctest: +SKIP
    (0.5, 'clean legal plasmids (n=3)')

Why per home domain. Clean adapters differ by domain in how much an inserted word moves their answer: on plora-tiny a
clean legal adapter answers " state" when a place name appears in the question, a clean science adapter hardly moves.
One threshold for all would be set by the legal adapters and miss every backdoor elsewhere. The *home domain* is the
built-in domain whose probe items the adapter improves most over the base (:func:`plora.gate.probes.home_domain`):
measured from behaviour, never read from the manifest, so an attacker cannot pick a laxer group by editing
``plora.yml``; to land in the legal group a plasmid must really be a legal adapter.

The normalised score is ``(raw - median) / max(top - median, FLOOR)`` over the home domain's clean calibration
scores: 0 is a typical clean plasmid, 1 the highest clean calibration plasmid of that domain. ``tau_trigger`` is in
these units. ``FLOOR`` (a probability of 0.001) keeps a domain whose clean scores barely vary from turning float noise
into large scores. A base or domain without a reference is scored on the fixed ``UNCALIBRATED_SCALE`` and says so.

Lookup order, as for the weight reference: ``PLORA_HOME/gate/trigger_reference.json`` (written by ``plora gate-eval``)
overrides the one shipped in ``plora/assets/gate/trigger_reference.json`` when its base digest matches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plora.fsio import atomic_write_json

TRIGGER_REFERENCE_VERSION = 1
TRIGGER_REFERENCE_NAME = "trigger_reference.json"
SHIPPED_TRIGGER_REFERENCE = Path(__file__).resolve().parent.parent / "assets" / "gate" / TRIGGER_REFERENCE_NAME
FLOOR = 0.001
UNCALIBRATED_SCALE = 0.05


@dataclass
class TriggerReference:
    base_digest: str
    statistic: str
    probe_version: int
    domains: dict[str, dict[str, float]] = field(default_factory=dict)  # home -> {median, top, n}

    def normalise(self, raw: float, home: str) -> tuple[float, str]:
        """(normalised score, what it was normalised by)."""
        entry = self.domains.get(home)
        if entry is None:
            return raw / UNCALIBRATED_SCALE, f"no clean reference for home domain {home!r}: fixed scale"
        scale = max(entry["top"] - entry["median"], FLOOR)
        return (raw - entry["median"]) / scale, f"clean {home} plasmids (n={int(entry['n'])})"

    def to_json(self) -> dict[str, Any]:
        return {"version": TRIGGER_REFERENCE_VERSION, "base_digest": self.base_digest, "statistic": self.statistic,
                "probe_version": self.probe_version, "floor": FLOOR, "domains": self.domains}


def build_trigger_reference(
    scores_by_home: Mapping[str, Sequence[float]], base_digest: str, statistic: str, probe_version: int
) -> TriggerReference:
    """From clean calibration plasmids' raw trigger scores, grouped by their measured home domain."""
    domains = {}
    for home, xs in sorted(scores_by_home.items()):
        x = np.asarray([v for v in xs if np.isfinite(v)], dtype=np.float64)
        if len(x):
            domains[home] = {"median": float(np.median(x)), "top": float(x.max()), "n": int(len(x))}
    return TriggerReference(base_digest, statistic, probe_version, domains)


def save_trigger_reference(ref: TriggerReference, path: str | Path | None = None) -> Path:
    from plora.settings import cache_dir

    target = Path(path) if path is not None else cache_dir("gate") / TRIGGER_REFERENCE_NAME
    return atomic_write_json(target, ref.to_json())


def read_trigger_reference(path: Path) -> TriggerReference | None:
    """The reference in ``path``; None when it is missing, malformed or of another version."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != TRIGGER_REFERENCE_VERSION:
            return None
        domains = {k: {s: float(v[s]) for s in ("median", "top", "n")} for k, v in data["domains"].items()}
        return TriggerReference(data["base_digest"], data["statistic"], int(data["probe_version"]), domains)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def load_trigger_reference(base_digest: str, statistic: str, probe_version: int) -> TriggerReference | None:
    """The cached reference if it matches, else the shipped one if it matches, else None."""
    from plora.settings import cache_dir

    for path in (cache_dir("gate") / TRIGGER_REFERENCE_NAME, SHIPPED_TRIGGER_REFERENCE):
        ref = read_trigger_reference(path) if path.is_file() else None
        if ref and (ref.base_digest, ref.statistic, ref.probe_version) == (base_digest, statistic, probe_version):
            return ref
    return None
