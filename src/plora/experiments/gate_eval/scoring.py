"""Score every cohort member with the gate's own detectors, once, and keep the scores beside the member.

    >>> from pathlib import Path
    >>> from plora.executor import ExecutorConfig
    >>> from plora.models import load_base
    >>> from plora.experiments.gate_eval.scoring import probe_all, probe_folder
    >>> result = probe_folder(Path("out/legal"), load_base("plora-tiny"), seed=0)   # probed, then cached
    >>> sorted(result), result["details"]["statistic"]
    (['clean_delta', 'details', 'trigger'], 'answer_info_share')
    >>> scores = probe_all({"legal": Path("out/legal")}, "plora-tiny", 0, ExecutorConfig(jobs=1))  # no probe: cached
    >>> scores["legal"]["trigger"] == result["trigger"]
    True

A member's probe result depends on its bytes and on :func:`plora.gate.probes.probe_identity` (probe version, base,
seed, config, the probe's questions and candidates): the cache file (``PLORA_HOME/gate-scores/<hash>.json``) is named
by exactly those, so a new probe version, config or domain data rescores and a rerun costs nothing. The weight
statistics (numpy, milliseconds) are recomputed each time.
Probing runs in ``jobs`` worker processes with one torch thread each, each loading the base once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plora.executor import ExecutorConfig

_WORKER_BASE: Any = None


def _cache_path(identity: str, artifact_sha: str) -> Path:
    from plora.settings import cache_dir

    key = json.dumps([identity, artifact_sha])
    return cache_dir("gate-scores") / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _read_scores(path: Path) -> dict[str, Any] | None:
    """A stored probe result, or None (a miss) when the file is absent or damaged: torn, not JSON, another shape."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    ok = (isinstance(data, dict) and isinstance(data.get("details"), dict)
          and all(isinstance(data.get(k), int | float) and not isinstance(data.get(k), bool)
                  for k in ("trigger", "clean_delta")))
    return data if ok else None


def probe_folder(folder: Path, base: Any, seed: int, config: dict[str, int] | None = None) -> dict[str, Any]:
    """The behavioural probe's result for one plasmid folder, computed once and then read from the cache.

    ``config``: the probe config (a calibration's ``probe_config``); default the one the gate uses for the base."""
    from plora.fsio import atomic_write_json
    from plora.gate import probes
    from plora.manifest import read_manifest
    from plora.plasmid import read_plasmid

    cfg = probes.ProbeConfig.for_base(base) if config is None else probes.ProbeConfig(**config)
    path = _cache_path(probes.probe_identity(base, seed, cfg), read_manifest(folder).artifact.sha256)
    if (stored := _read_scores(path)) is not None:
        return stored
    s = probes.behaviour_probe(read_plasmid(folder), base, seed=seed, config=cfg)
    result = {"trigger": s.trigger_score, "clean_delta": s.clean_delta, "details": s.details}
    atomic_write_json(path, result)
    return result


def _init(base_name: str) -> None:
    global _WORKER_BASE
    import torch
    from transformers.utils import logging as hf_logging

    from plora.models import load_base

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    _WORKER_BASE = load_base(base_name)


def _work(args: tuple[str, Path, int, dict[str, int] | None]) -> tuple[str, dict[str, Any]]:
    key, folder, seed, config = args
    return key, probe_folder(folder, _WORKER_BASE, seed, config)


def probe_all(folders: dict[str, Path], base_name: str, seed: int, executor: ExecutorConfig | None = None,
              on_done: Callable[[], None] | None = None, config: dict[str, int] | None = None
              ) -> dict[str, dict[str, Any]]:
    """``{key: probe result}`` for every folder, on ``executor`` (each worker loads the base once; cached results
    are only read). ``config``: as in :func:`probe_folder`."""
    from plora.executor import run_tasks

    def done(_: int, __: Any) -> None:
        if on_done:
            on_done()

    results = run_tasks(_work, [(k, f, seed, config) for k, f in folders.items()], executor, init=_init,
                        init_args=(base_name,), on_result=done, label="gate detectors", progress=False)
    return dict(results)


def weight_scores(members: Sequence[Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Per member id: the weight statistics of every module (input to a weight reference and its z-scores)."""
    from plora.gate.weights import plasmid_stats
    from plora.plasmid import read_plasmid

    return {m.id: plasmid_stats(read_plasmid(m.folder)) for m in members}
