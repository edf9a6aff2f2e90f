"""Run every command of README.md as written, in README order, in a fresh copy of the repository.

    .venv/bin/python .ci/readme_commands.py --list        # the plan: each command and what the check does with it
    .venv/bin/python .ci/readme_commands.py               # run them all (make readme-commands); exit 1 on a failure
    .venv/bin/python .ci/readme_commands.py --only 'swarm sim'   # the commands whose text matches a regex

The commands come from README.md itself, never from a copy: every ```bash fence and every indented code block (a
block whose first line starts with ``from``/``import`` is a Python snippet, run with the venv's python). A command
runs exactly as written unless an entry of ``.ci/readme_commands.toml`` matches it; that file is the explicit list of
what the check does differently and why (CI steps, placeholders, the long commands with the smaller size used, the
servers to run in the background, the commands known to fail today). An entry that matches no README command fails
the check, so the list follows the README's edits.

Where: a copy of the repository's files (``git ls-files``: tracked and untracked-but-not-ignored, as a fresh clone
plus your edits) with the repository's ``.venv`` linked in, ``PATH`` starting with ``.venv/bin`` (the README's
"activate the venv"), a new empty ``PLORA_HOME`` (cold caches, as on a new machine; ``--home`` reuses one) and
``HF_HUB_OFFLINE=1``. Each command's output goes to ``<report>/NN.log``; ``<report>/readme_commands.json`` has one
record per command (status, exit code, seconds, what ran); the commands' own ``results/`` (value-add, swarm and
gate-eval reports) is copied to ``<report>/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / ".ci" / "readme_commands.toml"
SHELL_FENCES = {"bash", "sh", "shell", "console"}
ENTRY_KEYS = {
    "match",
    "why",
    "action",
    "set",
    "replace",
    "prepare",
    "background",
    "ready_port",
    "timeout_s",
    "ok_exit",
    "ok_output",
    "known_failure",
}


@dataclass
class Command:
    line: int  # README line of the command's first line
    section: str
    block: int  # index of its code block: background servers stop when their block ends
    kind: str  # "shell" or "python"
    text: str  # as written (continuation lines joined)


@dataclass
class Step:
    command: Command
    entry: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return self.entry.get("action", "run")


# ----------------------------------------------------------------------------------------------------- README parsing
def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for n, text in lines:
        if pending is not None:
            pending = (pending[0], pending[1] + " " + text.strip())
        else:
            pending = (n, text)
        if pending[1].rstrip().endswith("\\"):
            pending = (pending[0], pending[1].rstrip()[:-1].rstrip())
            continue
        out.append(pending)
        pending = None
    if pending is not None:
        out.append(pending)
    return out


def parse_readme(path: Path) -> list[Command]:
    """Shell commands and Python snippets of the README's code blocks, in order."""
    commands: list[Command] = []
    section = ""
    lines = path.read_text(encoding="utf-8").splitlines()
    block: list[tuple[int, str]] = []
    fence: str | None = None
    blocks = 0

    def flush(kind_hint: str | None) -> None:
        nonlocal block, blocks
        body = [(n, t) for n, t in block if t.strip()]
        block = []
        if not body:
            return
        blocks += 1
        first = body[0][1].lstrip()
        if kind_hint == "python" or (kind_hint is None and first.startswith(("from ", "import "))):
            commands.append(Command(body[0][0], section, blocks, "python", "\n".join(t for _, t in body)))
            return
        if kind_hint not in (None, "shell"):
            return
        for n, text in _join_continuations(body):
            commands.append(Command(n, section, blocks, "shell", text.strip()))

    for n, raw in enumerate(lines, 1):
        if fence is not None:
            if raw.startswith("```"):
                flush("shell" if fence in SHELL_FENCES else "python" if fence == "python" else "other")
                fence = None
            else:
                block.append((n, raw))
            continue
        if raw.startswith("```"):
            flush(None)
            fence = raw[3:].strip().lower() or "text"
            continue
        if raw.startswith("    ") and (block or not lines[n - 2].strip() if n > 1 else True):
            block.append((n, raw[4:]))
            continue
        if raw.strip() and block:
            flush(None)
        if raw.startswith("#"):
            section = raw.lstrip("#").strip()
    flush(None)
    return commands


def _backgrounded(text: str) -> bool:
    """Whether a shell command ends with ``&`` (before any trailing comment): the README starts a server."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return False
    return bool(tokens) and tokens[-1] == "&"


def is_server(step: Step) -> bool:
    return bool(step.entry.get("background")) or (step.command.kind == "shell" and _backgrounded(step.command.text))


# ------------------------------------------------------------------------------------------------------------ plan
def load_config(path: Path = CONFIG) -> dict[str, Any]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    for e in data.get("command", []):
        unknown = set(e) - ENTRY_KEYS
        if unknown or "match" not in e:
            raise SystemExit(f"{path}: entry {e.get('match')!r}: unknown keys {sorted(unknown)} or no 'match'")
        if e.get("action", "run") not in {"run", "skip", "ci-step"}:
            raise SystemExit(f"{path}: entry {e['match']!r}: action must be run, skip or ci-step")
        if e.get("action") in {"skip", "ci-step"} and not e.get("why"):
            raise SystemExit(f"{path}: entry {e['match']!r}: a skipped command needs a 'why'")
    return data


def plan(commands: list[Command], config: dict[str, Any]) -> tuple[list[Step], list[str]]:
    """Each command with the entry that matches it; problems (stale or ambiguous entries) as messages."""
    entries = config.get("command", [])
    used = [0] * len(entries)
    steps, problems = [], []
    for c in commands:
        hits = [i for i, e in enumerate(entries) if re.search(e["match"], c.text)]
        if len(hits) > 1:
            problems.append(f"README:{c.line}: matched by several entries {[entries[i]['match'] for i in hits]}")
        for i in hits:
            used[i] += 1
        steps.append(Step(c, entries[hits[0]] if hits else {}))
    for e, n in zip(entries, used, strict=True):
        if n == 0:
            problems.append(f"entry {e['match']!r} matches no README command (the README changed: update it)")
    return steps, problems


def _fill(value: str, work: Path) -> str:
    return value.replace("{work}", str(work)).replace("{repo}", str(REPO))


def command_to_run(step: Step, work: Path) -> str:
    """The text that runs: as written, or with the entry's literal replacements and flag values applied."""
    text = step.command.text
    for old, new in step.entry.get("replace", {}).items():
        if old not in text:
            raise SystemExit(f"README:{step.command.line}: {old!r} is not in the command any more")
        text = text.replace(old, _fill(new, work), 1)  # the first: a placeholder, not a later comment
    flags = step.entry.get("set", {})
    if flags:
        argv = shlex.split(text, comments=True)
        for flag, value in flags.items():
            value = _fill(str(value), work)
            if flag in argv:
                i = argv.index(flag)
                if value == "":
                    continue
                argv[i + 1] = value
            else:
                argv += [flag] + ([value] if value != "" else [])
        text = shlex.join(argv)
    if is_server(step) and _backgrounded(text):
        text = shlex.join(shlex.split(text, comments=True)[:-1])  # this check runs it in the background itself
    return text


# ------------------------------------------------------------------------------------------------------------- run
@dataclass
class Outcome:
    line: int
    section: str
    command: str
    ran: str | None
    status: str  # ok, FAIL, TIMEOUT, known-failure, FIXED, skip, ci-step, background
    exit_code: int | None = None
    seconds: float = 0.0
    note: str = ""
    log: str | None = None


def _copy_repo(work: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            dest = work / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    venv = REPO / ".venv"
    if not venv.is_dir():
        raise SystemExit("no .venv: run `make setup` first")
    (work / ".venv").symlink_to(venv)


def _environment(work: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLORA_", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{work / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PLORA_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
    )
    return env


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(steps: list[Step], work: Path, home: Path, report: Path, default_timeout: float) -> list[Outcome]:
    env = _environment(work, home)
    outcomes: list[Outcome] = []
    servers: list[tuple[int, subprocess.Popen]] = []
    for k, step in enumerate(steps, 1):
        c, e = step.command, step.entry
        for block, proc in list(servers):  # servers live until the end of their code block
            if block != c.block:
                _stop(proc)
                servers.remove((block, proc))
        base = Outcome(c.line, c.section, c.text, None, step.action, note=e.get("why", ""))
        if step.action in {"skip", "ci-step"}:
            outcomes.append(base)
            print(f"[{k:>2}] {step.action:<13} README:{c.line} {c.text}", flush=True)
            continue
        ran = command_to_run(step, work) if c.kind == "shell" else c.text
        base.ran = ran
        log = report / f"{k:02d}.log"
        base.log = log.name
        argv = ["bash", "-c", ran] if c.kind == "shell" else [str(work / ".venv" / "bin" / "python"), "-c", ran]
        t0 = time.monotonic()
        with open(log, "wb") as out:
            if e.get("prepare"):
                subprocess.run(
                    ["bash", "-c", _fill(e["prepare"], work)],
                    cwd=work,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=120,
                )
            out.write(f"$ {ran}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            timeout = float(e.get("timeout_s", default_timeout))
            if is_server(step):
                port = e.get("ready_port")
                while port and not _port_open(port) and proc.poll() is None and time.monotonic() - t0 < timeout:
                    time.sleep(0.2)
                ready = proc.poll() is None and (not port or _port_open(port))
                servers.append((c.block, proc))
                base.status = "background" if ready else "FAIL"
                base.note = base.note or ("serving" if ready else "the server did not start")
                base.seconds = round(time.monotonic() - t0, 1)
                outcomes.append(base)
                print(f"[{k:>2}] {base.status:<13} README:{c.line} {ran}", flush=True)
                continue
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _stop(proc)
                code = None
        base.exit_code = code
        base.seconds = round(time.monotonic() - t0, 1)
        output = log.read_text(encoding="utf-8", errors="replace")
        ok = code in e.get("ok_exit", [0]) and (
            code == 0 or not e.get("ok_output") or re.search(e["ok_output"], output) is not None
        )
        if code is None:
            base.status = "TIMEOUT"
        elif e.get("known_failure"):
            base.status = "FIXED" if ok else "known-failure"
            base.note = e["known_failure"] if not ok else "passes now: delete its known_failure in the toml"
        else:
            base.status = "ok" if ok else "FAIL"
        outcomes.append(base)
        print(
            f"[{k:>2}] {base.status:<13} {base.seconds:>6.1f}s exit {code}  README:{c.line} {ran.splitlines()[0]}",
            flush=True,
        )
        if base.status in {"FAIL", "TIMEOUT"}:
            tail = output.strip().splitlines()[-6:]
            print("\n".join("      | " + t[:200] for t in tail), flush=True)
    for _, proc in servers:
        _stop(proc)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    ap.add_argument("--only", default=None, help="run only the commands whose text matches this regex")
    ap.add_argument("--workdir", default=None, help="run here (default: a new temporary folder, removed after)")
    ap.add_argument("--home", default=None, help="PLORA_HOME to use (default: a new empty one in the workdir)")
    ap.add_argument("--report", default="results/readme_commands", help="folder for the logs and the JSON report")
    args = ap.parse_args(argv)

    config = load_config()
    steps, problems = plan(parse_readme(Path(args.readme)), config)
    if args.list:
        for s in steps:
            c = s.command
            extra = s.entry.get("why") or s.entry.get("known_failure") or ""
            ran = command_to_run(s, Path("{work}")) if c.kind == "shell" else "(python snippet)"
            changed = "" if ran == c.text else f"\n        runs: {ran}"
            print(
                f"README:{c.line:<4} {s.action:<8} {c.text.splitlines()[0]}{changed}"
                + (f"\n        ({extra})" if extra else "")
            )
    for p in problems:
        print(f"readme-commands: {p}", file=sys.stderr)
    if problems or args.list:
        return 1 if problems else 0
    if args.only:
        steps = [s for s in steps if re.search(args.only, s.command.text)]

    report = Path(args.report).resolve()
    report.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="plora-readme-"))
    work.mkdir(parents=True, exist_ok=True)
    home = Path(args.home).resolve() if args.home else work / ".plora-home"
    t0 = time.monotonic()
    try:
        _copy_repo(work)
        outcomes = run(steps, work, home, report, float(config.get("defaults", {}).get("timeout_s", 600)))
        if (work / "results").is_dir():  # what the commands reported (value-add, swarm, gate-eval): CI keeps it
            shutil.copytree(work / "results", report / "results", dirs_exist_ok=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    wall = round(time.monotonic() - t0, 1)
    bad = [o for o in outcomes if o.status in {"FAIL", "TIMEOUT", "FIXED"}]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    (report / "readme_commands.json").write_text(
        json.dumps({"wall_s": wall, "counts": counts, "commands": [asdict(o) for o in outcomes]}, indent=1)
    )
    print(f"readme-commands: {wall:.0f} s; " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for o in bad:
        print(f"  {o.status}: README:{o.line} {o.command.splitlines()[0]}  (log {report / (o.log or '')})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
