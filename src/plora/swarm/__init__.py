"""Swarm Sim v2: push-pull gossip of plasmids with the real gate, from 6 to 10^7 agents, in one process.

    >>> from plora.swarm import SimConfig, run_simulation
    >>> cfg = SimConfig(agents=1000, graph_p=0.01, domains=("legal", "medical"), pool_dir="mypool", trojan_rate=0.0,
    ...                 security=False)   # mypool/: labels.json + one folder per plasmid (the README's --pool_dir)
    >>> report = run_simulation(cfg, progress=False)
    >>> report["final"]["coverage"]
    {'legal': 1.0, 'medical': 1.0}

| module | what |
|---|---|
| ``config`` | ``SimConfig`` / ``NetConfig``: every flag of ``plora swarm sim`` / ``plora swarm net``, shared defaults |
| ``graphs`` | ER / WS / BA overlays as int32 CSR, components, spectral gap |
| ``engine`` | the vectorised push-pull engine (bitset per agent) |
| ``reference`` | a slow, obviously correct engine for tests |
| ``pool`` | real clean/trojan plasmids, cached by content |
| ``verdicts`` | THE verdict cache: the gate's verdict per (plasmid bytes, policy, gate calibration), shared on disk |
| ``roles`` | who starts as a trojan agent and with which plasmid: one seeded draw for sim and net |
| ``theory`` | rumour-spreading predictions (mean-field recursion, complete-graph classics) |
| ``report`` | THE report schema shared with the networked swarm; JSON + coverage PNG writer |
| ``summary`` | summarise a folder of reports (``python -m scripts.evaluate_v2``) |
| ``sim`` | ``run_simulation``: graph, roles, pool, engine, theory, report |
| ``agent``, ``net`` | one networked agent (gRPC, own store and gate); a swarm of agent processes (``swarm net``) |

Nothing here imports torch unless a pool must be trained or a verdict computed.
"""

import importlib
from typing import Any

# Lazy (PEP 562): the CLI reads plora.swarm.config to build its options without importing the engine.
_EXPORTS = {
    "NetConfig": "config",
    "SimConfig": "config",
    "SwarmConfig": "config",
    "make_config": "config",
    "build_report": "report",
    "load_report": "report",
    "write_report": "report",
    "format_summary": "sim",
    "run_simulation": "sim",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
