"""`plora swarm net --ray`: the networked swarm's agents as Ray actors across a cluster, rounds driven through Ray.

    plora swarm net --agents 16 --rounds 10 --graph_p 0.25 --trojan_rate 0.3 --seed 42 --ray     # a private Ray here
    plora swarm net --agents 16 --rounds 10 --graph_p 0.25 --trojan_rate 0.3 --seed 42 --ray --ray-address auto

Library: ``plora.swarm.net.run_swarm_net(NetConfig(..., ray=True))``; ``report["meta"]["extra"]["driver"]`` is
``"ray"`` and ``report["meta"]["extra"]["nodes"]`` maps each agent to its node's address.

Each agent is one :class:`AgentHost` actor, spread over the cluster's nodes (Ray's SPREAD strategy, ``num_cpus=0``:
an agent mostly waits on the network). On its node the actor writes the agent's store (the seeded plasmid's files,
sent by the coordinator through Ray), the policy and the key files it names (only where the node lacks them: on one
machine the agents use the coordinator's own files, so verdicts cached by the sim are reused), then starts the very
command the process driver starts, ``plora agent --coordinated``, listening on the address its node is registered
at in the cluster (port picked by the OS), and returns that address. The coordinator gives each agent its
neighbours' addresses and runs the rounds exactly as the process driver does
(:func:`plora.swarm.net._run_rounds`): Step(r) on every agent at once, relayed by its actor over gRPC to the agent on
the same node, a barrier on Ray's futures, then Step(collect). No wall-clock start time is needed. An agent whose
actor or process dies is reported and the others carry on. The report is the process driver's
(:func:`plora.swarm.net._finish`: same schema, same accounting) with ``meta.extra.driver = "ray"`` and each agent's
node in ``meta.extra.nodes``.

Where: ``--ray-address`` (``auto``: the cluster started on this machine with ``ray start --head``; ``HOST:PORT``),
else ``RAY_ADDRESS``, else a private Ray on this machine. Every node needs plora installed (the same version) and,
for the gate's probes, the base model (plora-tiny ships in the package); verdicts are cached per node under its
PLORA_HOME. With ``--work_dir`` each node keeps its agents' stores and logs under that path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from plora.errors import PloraError
from plora.swarm.config import NetConfig

FileTree = dict[str, Any]  # path -> bytes (a file) or {name: bytes} (a folder of keys)


class AgentHost:
    """One swarm agent on a Ray node: a ``plora agent --coordinated`` process it starts, feeds and relays to."""

    def start(
        self,
        cfg_json: dict[str, Any],
        i: int,
        plasmid: tuple[str, dict[str, bytes]],
        policy: dict[str, Any] | None,
        files: FileTree,
        flags: list[str],
    ) -> tuple[str, str]:
        from plora.fsio import atomic_write_json, process_temp_dir
        from plora.grpc.server import format_address
        from plora.swarm.net_agents import spawn_agent, wait_ready

        cfg = NetConfig(**cfg_json)
        node = _node_address()
        self.keep = cfg.work_dir is not None
        self.work = Path(cfg.work_dir) if cfg.work_dir else process_temp_dir("plora-ray-agent-")
        self.home = self.work / f"a{i}"
        store = self.home / "store" / plasmid[0]
        shutil.rmtree(self.home / "store", ignore_errors=True)
        store.mkdir(parents=True)
        for name, data in plasmid[1].items():
            (store / name).write_bytes(data)
        local = _materialise(self.home / "files", files)
        policy_path = None
        if policy is not None:
            policy_path = atomic_write_json(self.home / "policy.json", _rewrite(policy, local))
        flags = [",".join(local.get(p, p) for p in arg.split(",")) for arg in flags]
        self.token = secrets.token_urlsafe(32)  # the agent takes Step calls from this actor only
        self.proc = spawn_agent(cfg, self.work, i, policy_path, flags, listen=format_address(node, 0),
                                 token=self.token)
        self.address = wait_ready(self.work, {i: self.proc}, timeout=120.0)[i]
        return self.address, node

    def peers(self, addresses: list[str]) -> None:
        from plora.fsio import atomic_write_text

        atomic_write_text(self.home / "peers.txt", "".join(a + "\n" for a in addresses))

    def step(self, round_: int, collect: bool, revocations: list[bytes], timeout: float) -> dict[str, Any] | None:
        from plora.swarm.net_agents import step_one

        return step_one(self.address, round_, collect, timeout, revocations, self.token)

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not getattr(self, "keep", True):
            shutil.rmtree(self.work, ignore_errors=True)
        elif proc is not None:
            from plora.grpc.client import clean_stale_stages

            clean_stale_stages(self.home / "store")


def _node_address() -> str:
    """The address this node is registered at in the cluster: what the other nodes reach it at."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == here)


def _materialise(folder: Path, files: FileTree) -> dict[str, str]:
    """Write the shipped files this node lacks (or holds different bytes for); return original -> local path."""
    local: dict[str, str] = {}
    for n, (path, data) in enumerate(sorted(files.items())):
        here = Path(path)
        if isinstance(data, bytes):
            if here.is_file() and here.read_bytes() == data:
                local[path] = path
                continue
            dest = folder / str(n) / here.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        else:
            if here.is_dir() and all((here / k).is_file() and (here / k).read_bytes() == v for k, v in data.items()):
                local[path] = path
                continue
            dest = folder / str(n) / here.name
            dest.mkdir(parents=True, exist_ok=True)
            for name, content in data.items():
                (dest / name).write_bytes(content)
        local[path] = str(dest)
    return local


def _rewrite(obj: Any, local: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _rewrite(v, local) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, local) for v in obj]
    return local.get(obj, obj) if isinstance(obj, str) else obj


def _referenced_files(policy: dict[str, Any] | None, flags: list[list[str]]) -> FileTree:
    """Key files and folders the agents' policy and flags name (trusted keys, revocation keys), with their bytes."""
    paths: set[str] = set()
    if policy is not None:
        paths.update(policy.get("trusted_keys") or [])
        paths.update((policy.get("recall") or {}).get("revocation_keys") or [])
    for args in flags:
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "--revocation-keys":
                paths.update(p for p in value.split(",") if p)
    out: FileTree = {}
    for p in sorted(paths):
        path = Path(p)
        if path.is_file():
            out[p] = path.read_bytes()
        elif path.is_dir():
            out[p] = {c.name: c.read_bytes() for c in sorted(path.iterdir()) if c.is_file()}
    return out


def _plasmid_files(entry: Any) -> tuple[str, dict[str, bytes]]:
    from plora.manifest import ADAPTER_CONFIG_NAME, MANIFEST_NAME, read_manifest

    src = Path(entry.folder)
    names = (MANIFEST_NAME, ADAPTER_CONFIG_NAME, read_manifest(src).artifact.filename)  # never the truth file
    return entry.plasmid_id, {n: (src / n).read_bytes() for n in names}


def _error(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text}"[:400]


def run_swarm_net_ray(cfg: NetConfig, on_round: Any = None) -> dict[str, Any]:
    """The networked swarm on Ray (see the module); ``on_round(round, actors)`` after each barrier."""
    from plora.executor import ExecutorConfig, connect_ray, ray_address_in_force
    from plora.swarm.net import _finish, _run_rounds, _setup, _State

    setup = _setup(cfg)
    address = ray_address_in_force(ExecutorConfig(ray_address=cfg.ray_address)) or "local"
    ray = connect_ray(ExecutorConfig(jobs=os.cpu_count() or 1, ray_address=address))  # the first `import ray`
    flags = {i: setup.agent_flags(i) for i in range(cfg.agents)}
    files = ray.put(_referenced_files(setup.policy_json, list(flags.values())))
    cfg_json = cfg.model_dump(mode="json")
    host: Any = ray.remote(num_cpus=0, max_restarts=0)(AgentHost)
    actors = {i: host.options(scheduling_strategy="SPREAD").remote() for i in range(cfg.agents)}
    addresses: dict[int, str] = {}
    nodes: dict[int, str] = {}
    state = _State(cfg.agents, {i: {p.plasmid_id: p.sha256} for i, p in setup.seeded.items()})
    quiescent, t_rounds = False, 0.0
    try:
        starts = {
            i: actors[i].start.remote(cfg_json, i, _plasmid_files(setup.seeded[i]), setup.policy_json, files, flags[i])
            for i in actors
        }
        for i, ref in starts.items():
            try:
                addresses[i], nodes[i] = ray.get(ref, timeout=180)
            except Exception as err:  # noqa: BLE001 - the actor's error, in one line
                raise PloraError(f"agent a{i} did not start on its Ray node: {_error(err)}") from None
        t_ready = time.perf_counter()
        ray.get([actors[i].peers.remote([addresses[j] for j in nbrs]) for i, nbrs in setup.neighbours.items()])

        def step_all(alive: dict[int, bool], r: int, collect: bool, revocations: dict) -> dict[int, dict]:
            refs = {
                actors[i].step.remote(r, collect, revocations.get(i, []), cfg.step_timeout_s): i
                for i in actors
                if alive[i]
            }
            ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=cfg.step_timeout_s + 60)
            out: dict[int, dict] = {}
            for ref in ready:
                try:
                    rec = ray.get(ref)
                except Exception:  # noqa: BLE001 - a dead actor is a dead agent
                    rec = None
                if rec is None:
                    alive[refs[ref]] = False
                else:
                    out[refs[ref]] = rec
            for ref in late:
                alive[refs[ref]] = False
            return out

        quiescent = _run_rounds(
            cfg, setup, state, step_all, None if on_round is None else (lambda r: on_round(r, actors))
        )
        t_rounds = time.perf_counter() - t_ready
    finally:
        stops = [a.stop.remote() for a in actors.values()]
        with contextlib.suppress(Exception):
            ray.wait(stops, num_returns=len(stops), timeout=60)
        for a in actors.values():
            ray.kill(a)
    extra = {"driver": "ray", "nodes": {f"a{i}": n for i, n in sorted(nodes.items())}, "ray_address": address}
    return _finish(cfg, setup, state, quiescent, t_rounds, addresses, extra)
