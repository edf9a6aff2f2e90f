"""The bench scripts refuse bad arguments with one line on stderr and exit 2, before any heavy import or work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

BAD = [
    ("transfer.py", ["--repeats", "0"]),
    ("transfer.py", ["--chunk-kib", "abc"]),
    ("transfer.py", ["--chunk-kib", "0"]),
    ("transfer.py", ["--size-mb", "-1"]),
    ("signatures.py", ["--rounds", "0"]),
    ("swarm.py", ["--sizes", "abc"]),
    ("swarm.py", ["--sizes", "0"]),
    ("swarm.py", ["--timeout", "-1"]),
    ("probe.py", ["--n", "0"]),
    ("probe.py", ["--models", "nosuch"]),
    ("sweep_backends.py", ["--jobs", "0"]),
    ("sweep_backends.py", ["--agents", "abc"]),
    ("runtime.py", ["--models", "nosuch"]),
    ("runtime.py", ["--repeats", "0"]),
]


@pytest.mark.parametrize(("script", "args"), BAD, ids=[f"{s}{' '.join(a)}" for s, a in BAD])
def test_bad_argument_is_one_line_and_exit_2(script: str, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and args[0] in lines[0], proc.stderr
    assert proc.stdout == ""
