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

Parts: :mod:`plora.executor.config` (``ExecutorConfig`` and the backend it chooses), :mod:`plora.executor.local`
(``inline``, ``processes`` and the worker side of every task) and :mod:`plora.executor.ray_backend` (``ray`` and
:func:`connect_ray`); this module is the driver every backend reports to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from plora.errors import PloraError
from plora.executor.config import ATTEMPTS, Backend, ExecutorConfig, backend_of, ray_address_in_force
from plora.executor.local import _Init, _run_inline, _run_processes
from plora.executor.ray_backend import _run_ray, connect_ray, start_local_ray

__all__ = [
    "ATTEMPTS",
    "Backend",
    "ExecutorConfig",
    "TaskError",
    "TaskFailure",
    "backend_of",
    "connect_ray",
    "ray_address_in_force",
    "run_tasks",
    "start_local_ray",
]


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
