"""Kill a real plora process at a chosen point of a write: deterministic crash tests, no timing."""

from __future__ import annotations

import subprocess
import sys

# Runs ``python -c`` code after wrapping every rename (os.replace, os.rename, plora.fsio's swap): the process SIGKILLs
# itself right after (KILL_WHEN=after) or just before (before) the first such call that moves an entry named
# KILL_AT_RENAME (source or destination).
_HOOK = """
import os, signal, sys
import plora.fsio as fsio
name, when = os.environ["KILL_AT_RENAME"], os.environ["KILL_WHEN"]

def killing(real):
    def call(a, b, *args, **kw):
        hit = name in (os.path.basename(os.fspath(a)), os.path.basename(os.fspath(b)))
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(a, b, *args, **kw)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return call

os.replace, os.rename = killing(os.replace), killing(os.rename)
if hasattr(fsio, "_rename_exchange"):
    fsio._rename_exchange = killing(fsio._rename_exchange)
"""


def run_killed_at_rename(code: str, name: str, timeout: float = 120, before: bool = False) -> int:
    """Run ``code`` in a fresh Python that is SIGKILLed right after (or ``before``) its first rename touching
    ``name``; its exit code (-9 when it was killed there)."""
    import os

    env = {**os.environ, "KILL_AT_RENAME": name, "KILL_WHEN": "before" if before else "after"}
    return subprocess.run([sys.executable, "-c", _HOOK + code], env=env, timeout=timeout).returncode


def plora_cli(*argv: str) -> str:
    """``code`` for :func:`run_killed_at_rename` that runs ``plora argv...``."""
    return f"from plora.cli.main import main\nmain({list(argv)!r})\n"


# Runs ``python -c`` code whose function MODULE:NAME, when called, first creates GO.ready then waits for GO to exist.
_PAUSE = """
import importlib, os, time
_module, _name = os.environ["PAUSE_AT"].split(":")
_go = os.environ["PAUSE_GO"]
_mod = importlib.import_module(_module)
_real = getattr(_mod, _name)

def _paused(*args, **kw):
    open(_go + ".ready", "w").close()
    while not os.path.exists(_go):
        time.sleep(0.01)
    return _real(*args, **kw)

setattr(_mod, _name, _paused)
"""


def start_paused_at(code: str, where: str, go: str) -> subprocess.Popen:
    """Start ``code`` in a fresh Python that stops when it calls ``where`` (``module:function``) until the file
    ``go`` exists; ``go + ".ready"`` appears once it has stopped there."""
    import os

    env = {**os.environ, "PAUSE_AT": where, "PAUSE_GO": go}
    return subprocess.Popen([sys.executable, "-c", _PAUSE + code], env=env)


def wait_until(condition, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def waits_on_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked waiting for a flock/fcntl lock (a ``->`` line of /proc/locks)."""
    from pathlib import Path

    return any(line.split()[5] == str(pid) for line in Path("/proc/locks").read_text().splitlines()
               if " -> " in line and len(line.split()) > 5)
