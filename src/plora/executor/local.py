"""The backends on this machine: ``inline`` (the tasks in this process, one after another) and ``processes``
(spawned worker processes), and the worker side every backend runs a task through (:func:`_call`: thread caps and
the caller's initialiser, once per worker). Worker processes and Ray receive :class:`_Init` and :func:`_call`
pickled by reference, so both stay module-level here."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from plora.errors import Terminated
from plora.executor.config import ATTEMPTS, ExecutorConfig

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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
