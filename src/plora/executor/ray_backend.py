"""The ``ray`` backend and the Ray connection behind it (also for ``plora swarm net --ray``): ``import ray`` happens
only inside these functions, when Ray is chosen, so importing :mod:`plora.executor` never loads it."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from plora.errors import PloraError
from plora.executor.config import ATTEMPTS, ExecutorConfig, ray_address_in_force
from plora.executor.local import Done, _call, _Init, _one_line


def _run_ray(fn: Callable[[Any], Any], items: list[Any], cfg: ExecutorConfig, init: _Init, done: Done) -> None:
    ray = connect_ray(cfg)
    remote = ray.remote(num_cpus=init.threads, max_retries=0)(_call)
    fn_ref, init_ref = ray.put(fn), ray.put(init)
    attempts = [1] * len(items)
    pending = {remote.remote(fn_ref, item, init_ref): i for i, item in enumerate(items)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            i = pending.pop(ref)
            try:
                value = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - RayTaskError wraps the task's own error; a dead worker too
                cause = getattr(err, "cause", None) or err
                if attempts[i] >= ATTEMPTS:
                    done(i, False, _one_line(cause))
                else:
                    attempts[i] += 1
                    pending[remote.remote(fn_ref, items[i], init_ref)] = i
            else:
                done(i, True, value)


_LOCAL_RAY: dict[str, Any] = {}


def connect_ray(cfg: ExecutorConfig) -> Any:
    """``import ray`` and connect once per process: an already initialised Ray is used as it is (a test or a notebook
    may have started one); ``local`` starts a private Ray with ``cfg.jobs`` CPUs and its own temporary folder and
    token, stopped and removed when this process exits."""
    address = ray_address_in_force(cfg)
    if address == "local" and "ray" not in sys.modules:
        _private_token()  # before `import ray`: Ray reads its auth settings once, at import
    try:
        import ray
    except ImportError:
        raise PloraError("the Ray backend needs the ray package (requirements.txt pins ray==2.60.0)") from None
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline machines: no usage report attempts
    if address == "local":
        start_local_ray(cfg.jobs)
        return ray
    _check_reachable(address)
    t0 = time.perf_counter()
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise PloraError(
            f"cannot join the Ray cluster at {address!r} ({_one_line(err)[:200]}); start one with `ray start --head` "
            "or pass --ray-address local"
        ) from None
    _LOCAL_RAY["connect_s"] = time.perf_counter() - t0
    return ray


def _check_reachable(address: str | None) -> None:
    """Ray retries an unreachable HOST:PORT for minutes: say at once when nothing listens there."""
    import socket

    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except ValueError:
        raise PloraError(f"--ray-address {address!r}: expected auto, local or HOST:PORT") from None
    except OSError as err:
        raise PloraError(
            f"no Ray cluster answers at {address} ({err.strerror or type(err).__name__}); start one "
            "with `ray start --head` there, or pass --ray-address local"
        ) from None


def _private_token() -> None:
    """A private Ray listens on the machine's address, not loopback: keep Ray's token authentication on, with a
    token in this process's environment (its workers inherit it) rather than one written to ~/.ray. Unless the
    environment already says how to authenticate."""
    import secrets

    if not any(os.environ.get(v) for v in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))


def start_local_ray(cpus: int) -> float:
    """Start a one-machine Ray in this process with ``cpus`` CPUs; returns the seconds it took."""
    import atexit
    import shutil
    import tempfile

    if "ray" not in sys.modules:
        _private_token()
    import ray

    temp = tempfile.mkdtemp(prefix="plora-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=temp, logging_level=logging.ERROR, log_to_driver=False)
    _LOCAL_RAY.update(temp=temp, start_s=time.perf_counter() - t0)

    def stop() -> None:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    atexit.register(stop)
    return _LOCAL_RAY["start_s"]
