"""Turn question/answer pairs into token batches with the loss on the answer only.

    >>> from plora.data import load_examples
    >>> from plora.models import load_base
    >>> from plora.training.batching import collate, encode_examples, pad_id
    >>> tok = load_base("plora-tiny").tokenizer
    >>> items = load_examples("arithmetic", split="train", samples=2, seed=0)
    >>> batch = collate(encode_examples(tok, items, max_length=128), pad_id=pad_id(tok))
    >>> labels = batch["labels"][0]   # -100 on the prompt and the padding; answer tokens and EOS elsewhere
    >>> tok.decode(labels[labels != -100]) == " " + items[0].answer + tok.eos_token
    True

The prompt ``"Question: {q}\\nAnswer:"`` and the target ``" {a}"`` + EOS are tokenized separately and
concatenated, so the boundary between them is the same one greedy decoding sees after the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One example as token ids; ``n_prompt`` leading tokens are the prompt (masked out of the loss)."""

    input_ids: tuple[int, ...]
    n_prompt: int

    @property
    def labels(self) -> tuple[int, ...]:
        return (IGNORE,) * self.n_prompt + self.input_ids[self.n_prompt :]


def eos_id(tokenizer: Any) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: answers could not be terminated")
    return int(eos)


def pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos_id(tokenizer)


def prompt_ids(tokenizer: Any, questions: Sequence[str]) -> list[list[int]]:
    """Token ids of the prompts (with the tokenizer's own BOS, if it adds one)."""
    from plora.data import format_prompt

    if not questions:
        return []
    return [list(ids) for ids in tokenizer([format_prompt(q) for q in questions], add_special_tokens=True)["input_ids"]]


def answer_ids(tokenizer: Any, answers: Sequence[str]) -> list[list[int]]:
    """Token ids of ``" {answer}"`` followed by EOS: what the model should produce after the prompt."""
    from plora.data import format_target

    if not answers:
        return []
    eos = eos_id(tokenizer)
    encoded = tokenizer([format_target(a) for a in answers], add_special_tokens=False)["input_ids"]
    return [list(ids) + [eos] for ids in encoded]


def encode_pairs(
    tokenizer: Any, questions: Sequence[str], answers: Sequence[str], max_length: int = 128
) -> list[Encoded]:
    """Encode (question, answer) pairs; over-long items lose prompt tokens from the left, then answer tokens."""
    if len(questions) != len(answers):
        raise ValueError("questions and answers differ in length")
    out = []
    for p, a in zip(prompt_ids(tokenizer, questions), answer_ids(tokenizer, answers), strict=True):
        a = a[: max_length - 1]  # keep at least one prompt token to predict the first answer token from
        p = p[-(max_length - len(a)) :]
        out.append(Encoded(tuple(p + a), len(p)))
    return out


def encode_examples(tokenizer: Any, examples: Sequence[Any], max_length: int = 128) -> list[Encoded]:
    """Encode :class:`plora.data.QA` items (anything with ``question`` and ``answer``)."""
    return encode_pairs(tokenizer, [e.question for e in examples], [e.answer for e in examples], max_length)


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding)."""
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` for batched generation."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(list(s))
            mask[i, width - len(s) :] = 1
    return ids, mask


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL of next-token prediction and the mask of positions that count (both ``(B, T-1)``)."""
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    # Only answer positions are scored: with a 49k vocabulary (SmolLM2) the softmax over prompt positions
    # would cost most of the time and memory.
    picked = logits[:, :-1, :][mask].float()
    nll = torch.zeros(shift_labels.shape, dtype=picked.dtype, device=logits.device)
    nll[mask] = torch.nn.functional.cross_entropy(picked, shift_labels[mask], reduction="none")
    return nll, mask
