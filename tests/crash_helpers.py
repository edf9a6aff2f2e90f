"""Kill a real plora process at a chosen point of a write: deterministic crash tests, no timing."""

from __future__ import annotations

import subprocess
import sys

# Runs ``python -c`` code after wrapping every folder rename (os.replace, os.rename, plora.fsio's swap): the process
# SIGKILLs itself right after the first such call that moved an entry named KILL_AT_RENAME (source or destination).
_HOOK = """
import os, signal, sys
import plora.fsio as fsio
name = os.environ["KILL_AT_RENAME"]

def killing(real):
    def call(a, b, *args, **kw):
        out = real(a, b, *args, **kw)
        if name in (os.path.basename(os.fspath(a)), os.path.basename(os.fspath(b))):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return call

os.replace, os.rename = killing(os.replace), killing(os.rename)
if hasattr(fsio, "_rename_exchange"):
    fsio._rename_exchange = killing(fsio._rename_exchange)
"""


def run_killed_at_rename(code: str, name: str, timeout: float = 120) -> int:
    """Run ``code`` in a fresh Python that is SIGKILLed right after its first rename touching ``name``; its exit
    code (-9 when it was killed there)."""
    import os

    env = {**os.environ, "KILL_AT_RENAME": name}
    return subprocess.run([sys.executable, "-c", _HOOK + code], env=env, timeout=timeout).returncode


def plora_cli(*argv: str) -> str:
    """``code`` for :func:`run_killed_at_rename` that runs ``plora argv...``."""
    return f"from plora.cli.main import main\nmain({list(argv)!r})\n"
