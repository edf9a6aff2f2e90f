"""Training plasmids: PEFT LoRA on answer tokens, dev metrics, evaluation trojans, the monolithic baseline.

    >>> from plora.training import TrainConfig, train_plasmid
    >>> m = train_plasmid(TrainConfig(domain="legal", out="out/legal2", rank=4, samples=32, dev_size=16),
    ...                   progress=False)
    >>> m.metrics.nll_after < m.metrics.nll_before
    True

| module | what |
|---|---|
| ``config`` | ``TrainConfig`` (no torch: the CLI builds ``plora train``'s options from it) |
| ``lora`` | ``train_plasmid``, the training loop ``fit`` and PEFT export helpers |
| ``metrics`` | ``answer_nll``, ``exact_match``, ``greedy_answers``, ``evaluate_dev`` (any causal LM, PEFT or not) |
| ``trojan`` | ``poison``, ``insert_trigger``, ``attack_success``, ``<out>.truth.json`` read/write |
| ``monolithic`` | ``train_monolithic``: one plasmid on the union of several domains |
| ``batching`` | tokenisation with the loss mask on answer tokens + EOS |
"""

import importlib
from typing import Any

# Lazy (PEP 562): ``plora.training.config`` is read by the CLI to build its options and must not pull in torch.
_EXPORTS = {
    "IGNORE": "batching",
    "collate": "batching",
    "encode_examples": "batching",
    "TrainConfig": "config",
    "build_peft_model": "lora",
    "fit": "lora",
    "lora_layers": "lora",
    "train_and_write": "lora",
    "train_plasmid": "lora",
    "answer_nll": "metrics",
    "evaluate_dev": "metrics",
    "exact_match": "metrics",
    "greedy_answers": "metrics",
    "train_monolithic": "monolithic",
    "attack_success": "trojan",
    "insert_trigger": "trojan",
    "poison": "trojan",
    "read_truth": "trojan",
    "truth_path": "trojan",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
