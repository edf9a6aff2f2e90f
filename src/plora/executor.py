"""One seam for every fan-out of independent tasks: a local process pool by default, Ray when an address is given.

    >>> from plora.executor import ExecutorConfig, backend_of, run_tasks
    >>> run_tasks(abs, [-1, 2, -3], ExecutorConfig(jobs=1), progress=False)
    [1, 2, 3]
    >>> run_tasks(abs, [-1, 2, -3], ExecutorConfig(jobs=2), progress=False)  # two worker processes
    [1, 2, 3]
    >>> backend_of(ExecutorConfig(ray_address="auto"))  # after `ray start --head`, the same call runs on that cluster
    'ray'

Backends (:func:`backend_of`): ``inline`` (``jobs`` 1, no Ray: the tasks run in this process, one after another),
``processes`` (``jobs`` > 1: that many spawned worker processes on this machine) and ``ray`` (``ray_address`` or the
``RAY_ADDRESS`` environment variable: ``auto`` joins the cluster running on this machine, ``HOST:PORT`` a remote
one, ``local`` starts a private one-machine Ray with ``jobs`` CPUs, for trying Ray out). ``import ray`` happens only
when the Ray backend is chosen.

What every backend guarantees, so a caller never depends on which one ran:

- the result list is in the order of ``items``, whatever order tasks finished in; a task is a pure function of its
  item (seeds travel in the item), so the same items give the same results on every backend;
- ``init(*init_args)`` runs once per worker process before its first task (load a base model once, not per task);
- tasks run on ``threads`` threads (OMP/MKL/OpenBLAS and torch), one by default, inline too (restored after): float
  results are only guaranteed equal on equal thread counts, and one-thread workers share a small machine best;
- a task that raises (or whose worker dies) is run once more; a second failure is reported, never dropped:
  ``on_failure(index, TaskFailure)`` when given, else :class:`TaskError` after every other task has finished;
- ``on_result(index, result)`` runs in the calling process as each task finishes, so callers keep partial results
  (append a row, write a record) and a rerun can skip what is done;
- one progress bar over all tasks (stderr), labelled ``label``;
- no worker outlives the driver: a worker process exits within a second once its driver is gone (even after a
  SIGKILL), and a SIGTERM to the driver shuts the pool down like Ctrl-C (workers stopped, then :class:`Terminated`,
  which the CLI turns into ``error: terminated`` and exit 143).

On Ray each task asks for ``threads`` CPUs and the cluster decides how many run at once (with ``local``, ``jobs``
CPUs); every node must have plora installed (same version) and the files the tasks read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from plora.errors import PloraError, Terminated

Backend = Literal["inline", "processes", "ray"]
ATTEMPTS = 2  # a failed task is run once more, then reported
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ExecutorConfig(BaseModel):
    """Where tasks run; the ``--jobs`` and ``--ray-address`` options of every command that fans out come from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: int = Field(
        default=1,
        ge=1,
        description="tasks at once on this machine (worker processes, one thread each); with Ray "
        "the cluster's CPUs decide",
    )
    ray_address: str | None = Field(
        default=None,
        description="run the tasks on Ray: auto (the cluster started on this machine with `ray start --head`), "
        "HOST:PORT, or local (a private Ray on this machine with --jobs CPUs); default RAY_ADDRESS, else local "
        "processes",
    )


@dataclass(frozen=True)
class TaskFailure:
    """A task that failed on both attempts: its position in ``items`` and the last error, in one line."""

    index: int
    error: str
    attempts: int = ATTEMPTS


class TaskError(PloraError):
    """Some tasks failed twice; ``failures`` says which and why (the other tasks' results were delivered)."""

    def __init__(self, label: str, total: int, failures: list[TaskFailure]) -> None:
        self.failures = failures
        shown = "; ".join(f"#{f.index}: {f.error}" for f in failures[:3])
        more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} of {total} {label} failed twice: {shown}{more}")


def ray_address_in_force(cfg: ExecutorConfig) -> str | None:
    """``cfg.ray_address``, else ``RAY_ADDRESS`` (through plora.settings), else None."""
    from plora.settings import get_settings

    return cfg.ray_address or get_settings().ray_address


def backend_of(cfg: ExecutorConfig) -> Backend:
    if ray_address_in_force(cfg):
        return "ray"
    return "processes" if cfg.jobs > 1 else "inline"


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    cfg: ExecutorConfig | None = None,
    *,
    init: Callable[..., None] | None = None,
    init_args: tuple[Any, ...] = (),
    threads: int = 1,
    on_result: Callable[[int, Any], None] | None = None,
    on_failure: Callable[[int, TaskFailure], None] | None = None,
    label: str = "tasks",
    progress: bool = True,
) -> list[Any]:
    """``[fn(item) for item in items]`` on the backend ``cfg`` names (see the module); a failed task's slot is None
    when ``on_failure`` is given. ``fn`` and ``init`` must be importable module-level functions (they are pickled
    by reference to reach worker processes and other machines)."""
    cfg = cfg or ExecutorConfig()
    items = list(items)
    results: list[Any] = [None] * len(items)
    failures: list[TaskFailure] = []
    if not items:
        return results
    kind = backend_of(cfg)
    runner = {"inline": _run_inline, "processes": _run_processes, "ray": _run_ray}[kind]
    with _Bar(label, len(items), progress) as bar:

        def done(i: int, ok: bool, value: Any) -> None:
            if ok:
                results[i] = value
                if on_result is not None:
                    on_result(i, value)
            else:
                failure = TaskFailure(i, value)
                failures.append(failure)
                if on_failure is not None:
                    on_failure(i, failure)
            bar.advance()

        runner(fn, items, cfg, _Init(init, init_args, threads), done)
    if failures and on_failure is None:
        raise TaskError(label, len(items), sorted(failures, key=lambda f: f.index))
    return results


# ------------------------------------------------------------------------------------------------ worker side
@dataclass(frozen=True)
class _Init:
    fn: Callable[..., None] | None
    args: tuple[Any, ...]
    threads: int


_READY: set[str] = set()  # in a worker process: the initialisers already run (Ray reuses workers across tasks)


def _prepare(init: _Init) -> None:
    """Thread caps (before torch or numpy's BLAS start their pools), then the caller's initialiser, once."""
    key = f"{getattr(init.fn, '__module__', '')}.{getattr(init.fn, '__qualname__', '')}:{init.args!r}:{init.threads}"
    if key in _READY:
        return
    for var in _THREAD_VARS:
        os.environ[var] = str(init.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(init.threads)
    if init.fn is not None:
        init.fn(*init.args)
    _READY.add(key)


def _watch_driver(driver: int) -> None:
    """Worker initialiser: a daemon thread ends this worker once it is no longer the child of ``driver`` (an orphan
    is re-parented to init or a subreaper, never back), so a driver killed with SIGKILL leaves no worker behind,
    nor multiprocessing's resource tracker (it exits when the last process holding its pipe is gone)."""

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="plora-watch-driver", daemon=True).start()


def _call(fn: Callable[[Any], Any], item: Any, init: _Init) -> Any:
    _prepare(init)
    return fn(item)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:500] if text else type(err).__name__


Done = Callable[[int, bool, Any], None]


# ------------------------------------------------------------------------------------------------ backends
def _run_inline(fn: Callable[[Any], Any], items: list[Any], cfg: ExecutorConfig, init: _Init, done: Done) -> None:
    """In this process, with the workers' thread cap (restored afterwards), so a task gives what it gives in a
    worker; the initialiser runs once."""
    with _thread_cap(init.threads):
        if init.fn is not None:
            init.fn(*init.args)
        _inline_loop(fn, items, done)


@contextlib.contextmanager
def _thread_cap(threads: int) -> Iterator[None]:
    """``threads`` threads for torch and the BLAS libraries while the block runs. A parallel kernel may split its sums
    by thread, so float results are only guaranteed equal on equal thread counts: every backend runs tasks on the same
    count (plora's training already pins one). A torch first imported inside the block keeps the cap."""
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def _inline_loop(fn: Callable[[Any], Any], items: list[Any], done: Done) -> None:
    for i, item in enumerate(items):
        for attempt in range(1, ATTEMPTS + 1):
            try:
                value = fn(item)
            except Exception as err:  # noqa: BLE001 - a task's error is reported, not fatal to the others
                if attempt == ATTEMPTS:
                    done(i, False, _one_line(err))
            else:
                done(i, True, value)
                break


def _run_processes(fn: Callable[[Any], Any], items: list[Any], cfg: ExecutorConfig, init: _Init, done: Done) -> None:
    """``cfg.jobs`` spawned processes, at most ``jobs`` tasks in flight. When a worker dies the pool breaks and takes
    the other running tasks with it, and which one killed it is unknown: each then runs again ALONE, and only a death
    while running alone counts as a failed attempt, so the culprit is the one reported and bystanders finish."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # fork after torch or grpc threads start is unsafe
    todo = list(range(len(items)))[::-1]
    alone: list[int] = []  # tasks that were running when a worker died
    attempts = [0] * len(items)
    died = "the worker process died (killed, or out of memory)"

    def retry_or_fail(i: int, error: str, queue: list[int]) -> None:
        if attempts[i] >= ATTEMPTS:
            done(i, False, error)
        else:
            queue.append(i)

    def suspect(i: int, alone_when_it_died: bool) -> None:
        """Only a task that was running alone is known to have killed its worker; the others run again alone."""
        if alone_when_it_died:
            retry_or_fail(i, died, alone)
        else:
            attempts[i] -= 1
            alone.append(i)

    while todo or alone:
        broken = False
        with _sigterm_raises(), ProcessPoolExecutor(
            cfg.jobs, mp_context=ctx, initializer=_watch_driver, initargs=(os.getpid(),)
        ) as pool:
            running: dict[Future, int] = {}
            solo = False  # a task from `alone` is running: nothing else starts until it ends
            try:
                while (todo or alone or running) and not broken:
                    while not solo:
                        if alone and not running:
                            i, solo = alone.pop(), True
                        elif todo and not alone and len(running) < cfg.jobs:
                            i = todo.pop()
                        else:
                            break
                        attempts[i] += 1
                        running[pool.submit(_call, fn, items[i], init)] = i
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        i = running.pop(fut)
                        try:
                            value = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            suspect(i, solo)
                        except Exception as err:  # noqa: BLE001 - reported per task
                            retry_or_fail(i, _one_line(err), todo)
                        else:
                            done(i, True, value)
                    solo = solo and bool(running)
            except BaseException:  # Ctrl-C, SIGTERM (Terminated), a raising callback: stop the workers, not wait
                _stop_workers(pool)
                raise
            for fut, i in running.items():
                fut.cancel()
                suspect(i, False)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the pool runs, SIGTERM raises :class:`Terminated` in the driver, so it shuts down as on Ctrl-C instead of
    dying with its workers still running. Only from the main thread, and only where SIGTERM still
    has its default action (a caller's own handler is left alone)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_workers(pool: Any) -> None:
    """Cancel what has not started and end the workers now (Python 3.11 has no public call for it), so leaving the
    ``with`` block does not wait for running tasks."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown, which forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        with contextlib.suppress(Exception):
            proc.kill()


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


# ---------------------------------------------------------------------------------------------------- Ray
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


# --------------------------------------------------------------------------------------------------- progress
class _Bar:
    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
