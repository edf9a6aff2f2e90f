"""plora.fsio under real crashes: processes SIGKILLed in the middle of a write (see crash_helpers)."""

from __future__ import annotations

import os
import signal

from crash_helpers import run_killed_at_rename

from plora.fsio import staging_dir


def test_staging_dir_killed_while_replacing_keeps_a_whole_folder(tmp_path):
    """SIGKILL right after the first rename of the folder being replaced (a ``plora train --force``, ``import
    --force``, the pool, a base build): ``final`` holds the old files or the new ones, never nothing (before, the old
    folder sat under a hidden name and ``final`` was gone), and the dead process's leftovers are swept by the next
    staged write beside it."""
    final = tmp_path / "legal"
    with staging_dir(final) as stage:
        (stage / "a.txt").write_text("old a")
        (stage / "b.txt").write_text("old b")
    code = (f"from plora.fsio import staging_dir\nwith staging_dir({str(final)!r}) as stage:\n"
            "    (stage / 'a.txt').write_text('new a')\n    (stage / 'b.txt').write_text('new b')\n")
    assert run_killed_at_rename(code, "legal") == -signal.SIGKILL
    assert final.is_dir()
    files = {p.name: p.read_text() for p in final.iterdir()}
    assert files in ({"a.txt": "old a", "b.txt": "old b"}, {"a.txt": "new a", "b.txt": "new b"})
    with staging_dir(tmp_path / "medical") as stage:
        (stage / "a.txt").write_text("m")
    with staging_dir(final) as stage:
        (stage / "a.txt").write_text("third")
    assert sorted(os.listdir(tmp_path)) == ["legal", "medical"]
    assert [p.read_text() for p in final.iterdir()] == ["third"]


def test_staging_dir_failure_leaves_final_untouched(tmp_path):
    final = tmp_path / "legal"
    with staging_dir(final) as stage:
        (stage / "a.txt").write_text("old")
    try:
        with staging_dir(final) as stage:
            (stage / "a.txt").write_text("new")
            raise RuntimeError("training failed")
    except RuntimeError:
        pass
    assert (final / "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["legal"]
