"""The agent processes of ``plora swarm net``: start one, wait until it listens, drive its rounds (Step), and the
memory bound on how many this machine can hold.

    >>> from pathlib import Path
    >>> from plora.swarm.config import NetConfig
    >>> from plora.swarm.net_agents import spawn_agent, step_one, wait_ready
    >>> cfg = NetConfig(agents=1, security=False, progress=False)
    >>> proc = spawn_agent(cfg, Path("work"), 0, None, token="t0k3n")   # plora agent --coordinated, port from the OS
    >>> address = wait_ready(Path("work"), {0: proc}, timeout=120.0)[0]
    >>> step_one(address, 1, collect=True, timeout=60.0, token="t0k3n")["agent"]
    'a0'
    >>> step_one(address, 1, collect=True, timeout=60.0, token="guess") is None   # only its coordinator drives it
    True
    >>> proc.terminate()
    >>> proc.wait(timeout=30) in (0, -15)
    True

Used by both drivers: local processes (:mod:`plora.swarm.net`) and Ray actors (:mod:`plora.swarm.net_ray`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from plora.errors import PloraError
from plora.swarm.config import NetConfig


def step_one(address: str, round_: int, collect: bool, timeout: float,
              revocations: list[bytes] | None = None, token: str = "") -> dict[str, Any] | None:
    """One Step call to one agent (with the token it was started with): its round record, or None when it does not
    answer (dead)."""
    import grpc

    from plora.grpc.proto import pb2, pb2_grpc
    from plora.swarm.agent import STEP_TOKEN_HEADER

    with grpc.insecure_channel(address) as ch:
        try:
            request = pb2.StepRequest(round=round_, collect=collect, revocations=revocations or [])
            reply = pb2_grpc.PlasmidExchangeStub(ch).Step(request, timeout=timeout,
                                                          metadata=[(STEP_TOKEN_HEADER, token)])
        except grpc.RpcError:
            return None
        return json.loads(reply.json)


def step_all(addresses: dict[int, str], alive: dict[int, bool], round_: int, collect: bool,
              timeout: float, revocations: dict[int, list[bytes]] | None = None,
              token: str = "") -> dict[int, dict[str, Any]]:
    def one(i: int) -> tuple[int, dict[str, Any] | None]:
        return i, step_one(addresses[i], round_, collect, timeout, (revocations or {}).get(i, []), token)

    live = [i for i in addresses if alive[i]]
    with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:
        results = dict(pool.map(one, live))
    for i, rec in results.items():
        if rec is None:
            alive[i] = False
    return {i: r for i, r in results.items() if r is not None}


def spawn_agent(cfg: NetConfig, work: Path, i: int, policy: Path | None,
                 extra: list[str] | None = None, listen: str = "127.0.0.1:0", token: str = "") -> subprocess.Popen:
    """Start agent ``i`` as ``plora agent --coordinated``: it takes Step calls carrying ``token`` (handed over in a
    file only this user can read) and stops by itself once this process is gone."""
    home = work / f"a{i}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ready").unlink(missing_ok=True)
    token_file = home / "step.token"
    token_file.unlink(missing_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token)
    cmd = [sys.executable, "-m", "plora", "agent", "--listen", listen, "--root", str(home / "store"),
           "--coordinated", "--ready-file", str(home / "ready"), "--peers-file", str(home / "peers.txt"),
           "--seed", str(cfg.seed), "--name", f"a{i}", "--security", "on" if cfg.security else "off",
           "--max-per-contact", str(cfg.max_per_contact), "--step-token-file", str(token_file),
           "--coordinator-pid", str(os.getpid())]
    if policy is not None:
        cmd += ["--policy_file", str(policy)]  # with signatures on, it names the trusted keys
    cmd += list(extra or [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    log = open(home / "agent.log", "w")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        log.close()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) for the block, then deliver it: an agent started inside is always registered first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(*caught[0])


# resident memory of one agent process, measured: plain (gate verdicts mostly read from the cache), and with
# --live_model (torch and the base model loaded in every agent)
AGENT_MB, LIVE_AGENT_MB = 80, 400


def available_memory() -> int | None:
    """Bytes of memory this machine can still give processes (Linux MemAvailable, else free pages), or None."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check_memory(cfg: NetConfig) -> None:
    """Refuse, before any work, a swarm whose agent processes would not fit in this machine's memory."""
    per = LIVE_AGENT_MB if cfg.live_model else AGENT_MB
    need, have = cfg.agents * per * 2**20, available_memory()
    if have is not None and need > 0.8 * have:
        raise PloraError(f"--agents {cfg.agents} needs about {need / 1e9:.1f} GB ({per} MB per agent process"
                         f"{' with --live_model' if cfg.live_model else ''}) and this machine has {have / 1e9:.1f} GB "
                         f"available: use at most {int(0.8 * have / (per * 2**20))} agents, or --ray over a cluster")


def wait_ready(work: Path, procs: dict[int, subprocess.Popen], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    addresses: dict[int, str] = {}
    while len(addresses) < len(procs):
        for i, p in procs.items():
            if i in addresses:
                continue
            ready = work / f"a{i}" / "ready"
            if ready.exists():
                addresses[i] = ready.read_text().strip()
            elif p.poll() is not None:
                log = (work / f"a{i}" / "agent.log").read_text()[-2000:]
                raise PloraError(f"agent a{i} exited with code {p.returncode} before listening: {log.strip()}")
        if time.monotonic() > deadline:
            raise PloraError(f"agents not listening after {timeout:g} s")
        time.sleep(0.05)
    return addresses
