"""The executor seam on this machine: results in order, one retry then a report, a dead worker, lazy Ray import, no
worker outliving a killed driver.

Both backends on Ray are compared in test_swarm_sweep.py (one local Ray for the suite's Ray tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plora.executor import ExecutorConfig, TaskError, backend_of, run_tasks


def flaky_square(task: tuple[int, str]) -> tuple[int, int]:
    """x*x; x == 3 fails on its first attempt only (a marker file remembers), x == 5 always fails."""
    x, marker = task
    if x == 3 and not os.path.exists(marker):
        Path(marker).touch()
        raise ValueError("transient")
    if x == 5:
        raise RuntimeError(f"bad input {x}")
    return x, x * x


def die_on_seven(x: int) -> int:
    if x == 7:
        os._exit(9)  # the worker process dies: no exception, the pool breaks
    return x + 100


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_in_order_one_retry_then_reported(jobs: int, tmp_path: Path) -> None:
    cfg = ExecutorConfig(jobs=jobs)
    assert backend_of(cfg) == ("inline" if jobs == 1 else "processes")
    items = [(x, str(tmp_path / "marker")) for x in range(8)]
    seen: dict[int, tuple[int, int]] = {}
    failed: dict[int, str] = {}
    results = run_tasks(
        flaky_square,
        items,
        cfg,
        on_result=seen.__setitem__,
        on_failure=lambda i, f: failed.__setitem__(i, f.error),
        progress=False,
    )
    expected = [(x, x * x) for x in range(8)]
    assert results == [r if r[0] != 5 else None for r in expected]  # in item order, whatever finished first
    assert seen == {i: r for i, r in enumerate(expected) if i != 5}  # each delivered as it finished
    assert failed == {5: "RuntimeError: bad input 5"}  # retried once (3 succeeded on its retry), then reported

    with pytest.raises(TaskError, match=r"1 of 2 tasks failed twice: #1: RuntimeError: bad input 5"):
        run_tasks(flaky_square, [(1, "m"), (5, "m")], cfg, progress=False)


def test_a_dead_worker_is_reported_and_the_others_finish() -> None:
    failed = {}
    results = run_tasks(
        die_on_seven,
        list(range(10)),
        ExecutorConfig(jobs=2),
        progress=False,
        on_failure=lambda i, f: failed.__setitem__(i, f.error),
    )
    assert results == [x + 100 if x != 7 else None for x in range(10)]
    assert failed == {7: "the worker process died (killed, or out of memory)"}


def test_ray_is_imported_only_when_chosen() -> None:
    code = (
        "import sys; import plora.cli.main, plora.executor, plora.swarm.sweep, plora.swarm.net_ray; "
        "from plora.executor import ExecutorConfig, run_tasks; run_tasks(abs, [-1], ExecutorConfig(), "
        "progress=False); assert 'ray' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]


def test_ray_address_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert backend_of(ExecutorConfig(jobs=4)) == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    assert backend_of(ExecutorConfig(jobs=4)) == "processes"


DRIVER = '''
import os, sys, time
from pathlib import Path


def hold(folder: str) -> None:
    Path(folder, str(os.getpid())).touch()  # which worker runs it
    time.sleep(60)


def main() -> None:
    from plora.executor import ExecutorConfig, run_tasks

    run_tasks(hold, [sys.argv[1]] * 2, ExecutorConfig(jobs=2), progress=False)


if __name__ == "__main__":
    from plora.cli.main import run_standalone

    run_standalone(main, [])
'''


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc: the workers and multiprocessing's resource tracker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_no_worker_outlives_a_killed_driver(sig: str, tmp_path: Path) -> None:
    script, pids = tmp_path / "driver.py", tmp_path / "pids"
    script.write_text(DRIVER)
    pids.mkdir()
    driver = subprocess.Popen(
        [sys.executable, str(script), str(pids)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    spawned: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2:  # both workers are running a task
            assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read() if driver.stderr else ""
            time.sleep(0.1)
        workers = {int(p.name) for p in pids.iterdir()}
        spawned = _children(driver.pid)
        assert workers <= spawned
        driver.send_signal(getattr(signal, sig))
        out, err = driver.communicate(timeout=15)  # nothing left holding its stdout/stderr open
        deadline = time.monotonic() + 5
        while any(map(_alive, spawned)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in spawned if _alive(pid)], "orphans left running"
        if sig == "SIGTERM":
            assert (driver.returncode, err.strip().splitlines()[-1]) == (143, "error: terminated"), err[-1500:]
        else:
            assert driver.returncode == -signal.SIGKILL
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
        for pid in filter(_alive, spawned):  # on failure: no orphan outlives the test
            os.kill(pid, signal.SIGKILL)
