"""Placebo plasmids for the value-add experiment.

    >>> from plora.experiments.placebo import module_update_norms, random_placebo
    >>> placebo = random_placebo("out/legal", "results/legal-placebo-a", seed=0)
    >>> trained, random = module_update_norms("out/legal"), module_update_norms("results/legal-placebo-a")
    >>> all(abs(random[m] - trained[m]) <= 1e-4 * trained[m] for m in trained)   # same size, module by module
    True

Placebo A is a random LoRA with the trained plasmid's rank and targets whose per-module update norm
``||(alpha/r) B @ A||_F`` equals the trained one's, module by module: it changes the model exactly as much,
in a random direction. Placebo B is the same training run with answers shuffled among the examples that ask the same
kind of thing (``shuffle_answers``): it sees the same questions, and learns each kind's answer format and answer set,
but no question-answer link.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from plora.manifest import ADAPTER_CONFIG_NAME, Manifest
from plora.plasmid import parse_lora_key, read_plasmid, write_plasmid


def module_update_norms(folder: str | os.PathLike[str]) -> dict[str, float]:
    """Per-module Frobenius norm of the scaled update (alpha/r) B @ A."""
    plasmid = read_plasmid(folder)
    norms = {}
    for module in plasmid.modules():
        a, b = plasmid.pair(module)
        norms[module] = float(np.linalg.norm(plasmid.scaling * (b.astype(np.float64) @ a.astype(np.float64))))
    return norms


def random_placebo(trained: str | os.PathLike[str], out: str | os.PathLike[str], seed: int) -> Manifest:
    plasmid = read_plasmid(trained)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for key in sorted(plasmid.tensors):
        if parse_lora_key(key) is None:
            tensors[key] = plasmid.tensors[key]
    for module in plasmid.modules():
        a_t, b_t = plasmid.pair(module)
        target = float(np.linalg.norm(plasmid.scaling * (b_t.astype(np.float64) @ a_t.astype(np.float64))))
        a = rng.standard_normal(a_t.shape) / np.sqrt(a_t.shape[1])
        b = rng.standard_normal(b_t.shape)
        norm = float(np.linalg.norm(plasmid.scaling * (b @ a)))
        b *= target / norm if norm > 0 else 0.0
        a_key = next(k for k in plasmid.tensors if parse_lora_key(k) == (module, "A"))
        b_key = next(k for k in plasmid.tensors if parse_lora_key(k) == (module, "B"))
        tensors[a_key] = a.astype(a_t.dtype)
        tensors[b_key] = b.astype(b_t.dtype)
    config = json.loads((Path(trained) / ADAPTER_CONFIG_NAME).read_text())
    m = plasmid.manifest
    training = m.training.model_copy(update={"dataset": "placebo:random-norm-matched", "seed": seed, "steps": 0})
    return write_plasmid(
        out,
        tensors,
        config,
        plasmid_id=f"{m.plasmid_id}-placebo-a",
        domain=m.domain,
        created_at=m.created_at,
        base_model=m.base_model,
        lora=m.lora,
        training=training,
    )


def ask_kind(example: Any) -> str:
    """What kind of thing a question asks ("court id", "neutrons", "sum"; every legal ``variant:<x>`` is "variant"):
    answers of one kind share a format, so a placebo that keeps them within their kind learns the format too."""
    return str(getattr(example, "ask", "") or "").split(":", 1)[0]


def shuffle_answers(examples: list, seed: int) -> list:
    """The same questions with answers permuted among the examples that ask the same kind of thing (a derangement
    where possible); kinds with a single example are pooled, so no example keeps its own answer for want of others.

    Within a kind the placebo learns each question type's answer format and answer set, and no question-answer
    link: what the trained plasmid gains over it is knowledge, not format. (Shuffling across kinds answered a
    neutron count with a court id, so the placebo never learned the formats and "beyond placebo B" counted them.)
    """
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(ask_kind(e), []).append(i)
    single = [idx[0] for idx in groups.values() if len(idx) == 1]
    pools = [idx for idx in groups.values() if len(idx) > 1] + ([single] if single else [])
    source = list(range(len(examples)))
    for idx in pools:
        order = list(idx)
        for _ in range(100):
            rng.shuffle(order)
            if len(order) < 2 or all(i != j for i, j in zip(idx, order, strict=True)):
                break
        for i, j in zip(idx, order, strict=True):
            source[i] = j
    return [replace(e, answer=examples[j].answer) for e, j in zip(examples, source, strict=True)]
