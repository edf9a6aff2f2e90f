"""Training plasmids: PEFT LoRA on answer tokens, dev metrics, evaluation trojans, the monolithic baseline.

    >>> from plora.training import TrainConfig, train_plasmid
    >>> m = train_plasmid(TrainConfig(domain="legal", out="out/legal2", rank=4, samples=32, dev_size=16),
    ...                   progress=False)
    >>> m.metrics.nll_after < m.metrics.nll_before
    True

| module | what |
|---|---|
| ``lora`` | ``TrainConfig``, ``train_plasmid``, the training loop ``fit`` and PEFT export helpers |
| ``metrics`` | ``answer_nll``, ``exact_match``, ``greedy_answers``, ``evaluate_dev`` (any causal LM, PEFT or not) |
| ``trojan`` | ``poison``, ``insert_trigger``, ``attack_success``, ``<out>.truth.json`` read/write |
| ``monolithic`` | ``train_monolithic``: one plasmid on the union of several domains |
| ``batching`` | tokenisation with the loss mask on answer tokens + EOS |
"""

from plora.training.batching import IGNORE, collate, encode_examples
from plora.training.lora import TrainConfig, build_peft_model, fit, lora_layers, train_and_write, train_plasmid
from plora.training.metrics import answer_nll, evaluate_dev, exact_match, greedy_answers
from plora.training.monolithic import train_monolithic
from plora.training.trojan import attack_success, insert_trigger, poison, read_truth, truth_path

__all__ = [
    "IGNORE",
    "TrainConfig",
    "answer_nll",
    "attack_success",
    "build_peft_model",
    "collate",
    "encode_examples",
    "evaluate_dev",
    "exact_match",
    "fit",
    "greedy_answers",
    "insert_trigger",
    "lora_layers",
    "poison",
    "read_truth",
    "train_and_write",
    "train_monolithic",
    "train_plasmid",
    "truth_path",
]
