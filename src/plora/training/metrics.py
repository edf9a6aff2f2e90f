"""Dev-split metrics for any causal LM (GPT-2, Llama; plain or wrapped by PEFT): answer NLL and exact match.

    >>> from plora.data import load_examples
    >>> from plora.loader import injected
    >>> from plora.models import load_base
    >>> from plora.training.metrics import answer_nll, exact_match
    >>> base = load_base("plora-tiny")
    >>> dev = load_examples("legal", split="dev", samples=16, seed=0)
    >>> before = answer_nll(base.model, base.tokenizer, dev)     # one value per example
    >>> with injected(base, "out/legal"):
    ...     after = answer_nll(base.model, base.tokenizer, dev)
    ...     em = exact_match(base.model, base.tokenizer, dev)    # 1.0 or 0.0 per example
    >>> before.shape, bool(after.mean() < before.mean()), set(em) <= {0.0, 1.0}
    ((16,), True, True)

``answer_nll`` is the mean negative log-likelihood per answer token (the answer and its EOS, never the
prompt), one value per example. ``exact_match`` decodes greedily after the prompt, cuts at EOS or the
first newline, strips, and compares with the answer: 1.0 or 0.0 per example. Both run batched under
``torch.inference_mode`` with examples sorted by length, so padding stays small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from plora.training.batching import answer_ids, collate, encode_examples, eos_id, left_pad, pad_id, prompt_ids
from plora.training.batching import token_losses as _token_losses


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def answer_nll(
    model: Any, tokenizer: Any, examples: Sequence[Any], batch_size: int = 32, max_length: int = 256
) -> np.ndarray:
    """Per-example mean NLL (nats per token) over the answer tokens and EOS; shape ``(len(examples),)``."""
    out = np.zeros(len(examples), dtype=np.float64)
    if not examples:
        return out
    enc = encode_examples(tokenizer, examples, max_length=max_length)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].input_ids))
    device, pad = _device(model), pad_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in _chunks(order, batch_size):
                batch = {k: v.to(device) for k, v in collate([enc[i] for i in idx], pad).items()}
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                nll, mask = _token_losses(logits, batch["labels"])
                per = (nll.sum(1) / mask.sum(1).clamp(min=1)).double().cpu().numpy()
                out[idx] = per
    finally:
        model.train(was_training)
    return out


def greedy_answers(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 32,
    max_prompt_tokens: int = 192,
) -> list[str]:
    """Greedy continuations of each prompt, cut at EOS or the first newline, stripped."""
    answers = [""] * len(questions)
    if not questions:
        return answers
    prompts = [p[-max_prompt_tokens:] for p in prompt_ids(tokenizer, questions)]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    device, pad, eos = _device(model), pad_id(tokenizer), eos_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in _chunks(order, batch_size):
                rows = _greedy_batch(model, [prompts[i] for i in idx], pad, eos, max_new_tokens, device)
                for i, text in zip(idx, rows, strict=True):
                    answers[i] = tokenizer.decode(text, skip_special_tokens=True).split("\n")[0].strip()
    finally:
        model.train(was_training)
    return answers


def _greedy_batch(
    model: Any, prompts: list[list[int]], pad: int, eos: int, max_new_tokens: int, device: torch.device
) -> list[list[int]]:
    # A hand-written loop (left padding, explicit position ids, KV cache) behaves the same on GPT-2 and
    # Llama, with or without a PEFT wrapper, and stops as soon as every row has emitted EOS.
    ids, mask = left_pad(prompts, pad)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    generated: list[torch.Tensor] = []
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        nxt = out.logits[:, -1, :].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        generated.append(nxt)
        done |= nxt == eos
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    rows = torch.stack(generated, dim=1).tolist()
    return [row[: row.index(eos)] if eos in row else row for row in rows]


def _normalise(text: str) -> str:
    return " ".join(text.split())


def default_max_new_tokens(tokenizer: Any, answers: Sequence[str], cap: int = 48) -> int:
    """Enough new tokens for the longest reference answer and its EOS (plus one of slack)."""
    longest = max((len(ids) for ids in answer_ids(tokenizer, answers)), default=1)
    return max(1, min(cap, longest + 1))


def exact_match(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Any],
    max_new_tokens: int | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Per-example 1.0/0.0: does greedy decoding reproduce the answer (whitespace-normalised)?"""
    if not examples:
        return np.zeros(0)
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(tokenizer, [e.answer for e in examples])
    preds = greedy_answers(model, tokenizer, [e.question for e in examples], max_new_tokens, batch_size)
    hits = [_normalise(p) == _normalise(e.answer) for p, e in zip(preds, examples, strict=True)]
    return np.array(hits, dtype=np.float64)


def evaluate_dev(model: Any, tokenizer: Any, examples: Sequence[Any], with_exact_match: bool) -> dict[str, float]:
    """The manifest's metric block for one model: ``nll``, ``ppl`` and (optionally) ``exact_match``."""
    nll = float(answer_nll(model, tokenizer, examples).mean()) if examples else float("nan")
    metrics = {"nll": nll, "ppl": math.exp(min(nll, 700.0))}
    if with_exact_match:
        metrics["exact_match"] = float(exact_match(model, tokenizer, examples).mean()) if examples else 0.0
    return metrics
