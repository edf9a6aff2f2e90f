"""The one place that reads plora's environment variables.

    >>> from plora.settings import get_settings
    >>> s = get_settings()
    >>> s.latency_budget_ms
    250.0

| variable | meaning | default |
|---|---|---|
| PLORA_BASE_MODEL | base model: ``plora-tiny``, ``smollm2-135m``, a hub id or a local folder | ``plora-tiny`` |
| PLORA_SAMPLES | global cap on training samples drawn (the smaller of this and ``--samples`` wins) | none |
| PLORA_LATENCY_BUDGET_MS | inject+remove budget (a positive number) enforced by e.g. the value-add experiment | 250 |
| PLORA_HOME | caches: converted GGUF models, trained pools, verdicts | ``~/.cache/plora`` |
| PLORA_DEVICE | torch device base models are loaded on: ``cpu``, ``cuda``, ``cuda:N`` | ``cpu`` |
| RAY_ADDRESS | where ``plora.executor`` runs tasks when ``--ray-address`` is not given (Ray's own variable) | none |

Values are read on every call, so tests and long-running agents see changes.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from plora.errors import PloraError

DEFAULT_BASE_MODEL = "plora-tiny"
DEFAULT_LATENCY_BUDGET_MS = 250.0


@dataclass(frozen=True)
class Settings:
    base_model: str
    samples: int | None
    latency_budget_ms: float
    home: Path
    device: str = "cpu"
    ray_address: str | None = None


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise PloraError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise PloraError(f"{name} must be a positive integer, got {raw!r}")
    return value


def get_settings() -> Settings:
    env = os.environ
    samples_raw = env.get("PLORA_SAMPLES", "").strip()
    budget_raw = env.get("PLORA_LATENCY_BUDGET_MS", "").strip()
    try:
        budget = float(budget_raw) if budget_raw else DEFAULT_LATENCY_BUDGET_MS
    except ValueError:
        budget = math.nan
    if not (math.isfinite(budget) and budget > 0):  # a NaN budget would never be exceeded
        raise PloraError(f"PLORA_LATENCY_BUDGET_MS must be a positive number of milliseconds, got {budget_raw!r}")
    home_raw = env.get("PLORA_HOME", "").strip()
    home = Path(home_raw).expanduser() if home_raw else Path.home() / ".cache" / "plora"
    device = env.get("PLORA_DEVICE", "").strip() or "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise PloraError(f"PLORA_DEVICE must be cpu, cuda, cuda:N or mps, got {device!r}")
    return Settings(
        base_model=env.get("PLORA_BASE_MODEL", "").strip() or DEFAULT_BASE_MODEL,
        samples=_positive_int("PLORA_SAMPLES", samples_raw) if samples_raw else None,
        latency_budget_ms=budget,
        home=home,
        device=device,
        ray_address=env.get("RAY_ADDRESS", "").strip() or None,
    )


def effective_samples(requested: int | None) -> int | None:
    """The sample cap in force: the smaller of ``--samples`` and PLORA_SAMPLES (either may be absent)."""
    env_cap = get_settings().samples
    caps = [c for c in (requested, env_cap) if c is not None]
    return min(caps) if caps else None


def choose_base_model(option: str | None) -> str:
    """``--base-model`` wins over PLORA_BASE_MODEL, which wins over the default ``plora-tiny``."""
    return option.strip() if option and option.strip() else get_settings().base_model


def cache_dir(*parts: str) -> Path:
    """A folder under PLORA_HOME, created on demand."""
    path = get_settings().home.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
