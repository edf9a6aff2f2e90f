"""One local Ray for the whole suite (started by the first test that asks, stopped at the end of the session).

def test_something(local_ray): ...   # ray.init(num_cpus=2, include_dashboard=False): own temp dir and token
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    keys = ("PLORA_HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED", "HF_HUB_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    # Ray's workers take the environment at start: the suite's PLORA_HOME (conftest) must be theirs too
    os.environ["PLORA_HOME"] = str(tmp_path_factory.getbasetemp() / "plora-home")
    os.environ["RAY_AUTH_MODE"] = "token"  # authenticated, with a token in the environment: nothing in ~/.ray
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["HF_HUB_OFFLINE"] = "1"
    ray = pytest.importorskip("ray")  # after the environment: Ray reads its auth settings at import
    temp = Path("/tmp") / f"plora-ray-test-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), logging_level="ERROR", log_to_driver=False)
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
