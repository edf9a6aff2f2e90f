"""Shared fixtures. Heavy ones (a trained plasmid) are session-scoped so the suite stays under 10 minutes."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (a CI run is reproducible); HYPOTHESIS_PROFILE=explore draws
# new ones each run, for looking for bugs (a failure found so becomes an @example in its test).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Each test session gets its own PLORA_HOME so caches never leak between runs."""
    home = tmp_path_factory.getbasetemp() / "plora-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("PLORA_HOME", str(home))
    monkeypatch.delenv("PLORA_SAMPLES", raising=False)
    monkeypatch.delenv("PLORA_BASE_MODEL", raising=False)


from fixtures_plasmids import *  # noqa: E402,F401,F403 - session fixtures: trained plasmids shared by the suite
from fixtures_ray import *  # noqa: E402,F401,F403 - one local Ray for the suite's Ray tests
