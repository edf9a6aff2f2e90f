"""Dev-split metrics for any causal LM (GPT-2, Llama; plain or wrapped by PEFT): answer NLL and exact match.

    >>> from plora.data import load_examples
    >>> from plora.loader import injected
    >>> from plora.models import load_base
    >>> from plora.training.metrics import answer_nll, exact_match, score_items
    >>> base = load_base("plora-tiny")
    >>> dev = load_examples("legal", split="dev", samples=16, seed=0)
    >>> before = answer_nll(base.model, base.tokenizer, dev)     # one value per example
    >>> with injected(base, "out/legal"):
    ...     after = answer_nll(base.model, base.tokenizer, dev)
    ...     em = exact_match(base.model, base.tokenizer, dev)    # 1.0 or 0.0 per example
    >>> before.shape, bool(after.mean() < before.mean()), set(em) <= {0.0, 1.0}
    ((16,), True, True)
    >>> s = score_items(base.model, base.tokenizer, dev, temperatures=(1.0, 1.3), with_exact_match=True)
    >>> bool((s.nll[0] == before).all()), s.nll.shape    # row k: the logits divided by temperatures[k]
    (True, (2, 16))

``answer_nll`` is the mean negative log-likelihood per answer token (the answer and its EOS, never the
prompt), one value per example. ``exact_match`` decodes greedily after the prompt, cuts at EOS or the
first newline, strips, and compares with the answer: 1.0 or 0.0 per example. Both run batched under
``torch.inference_mode`` with examples sorted by length, so padding stays small.

``score_items`` measures both in one pass, at several softmax temperatures, for the value-add experiment: the
teacher-forced forward that gives the NLL also gives greedy decoding's choice at every answer position, which settles
exact match for almost every example (a hit when every choice is the answer's token and then EOS; a miss when the
first wrong choice cannot continue the answer); only the rest is decoded. Decoding stops at the end of an answer: EOS
or a token holding a newline.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from plora.training.batching import (
    IGNORE,
    answer_ids,
    collate,
    encode_examples,
    eos_id,
    left_pad,
    pad_id,
    prompt_ids,
)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


@dataclass
class AnswerPositions:
    """One batch of examples at their answer positions: the logits that predict each answer token (and EOS)."""

    examples: list[int]  # indices into the caller's examples
    logits: torch.Tensor  # (rows, vocab), float32
    targets: torch.Tensor  # (rows,)
    owner: torch.Tensor  # (rows,): position in ``examples`` each row belongs to

    def per_example(self, values: torch.Tensor) -> np.ndarray:
        """The mean of per-row ``values`` over each example's rows, in the order of ``examples``."""
        n = len(self.examples)
        sums = torch.zeros(n, dtype=torch.float64).index_add_(0, self.owner, values.double())
        counts = torch.bincount(self.owner, minlength=n).double()
        return (sums / counts.clamp(min=1)).numpy()

    def nll(self, temperature: float = 1.0) -> np.ndarray:
        """Per-example mean answer-token NLL with the logits divided by ``temperature``."""
        z = self.logits if temperature == 1.0 else self.logits / temperature
        return self.per_example(torch.nn.functional.cross_entropy(z, self.targets, reduction="none"))


def answer_positions(
    model: Any, tokenizer: Any, examples: Sequence[Any], batch_size: int = 32, max_length: int = 256
) -> Iterator[AnswerPositions]:
    """Teacher-forced forward passes, batched by length; yields only what predicts answer tokens."""
    if not examples:
        return
    enc = encode_examples(tokenizer, examples, max_length=max_length)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].input_ids))
    device, pad = _device(model), pad_id(tokenizer)
    keep_logits = _takes_logits_to_keep(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in _chunks(order, batch_size):
                batch = {k: v.to(device) for k, v in collate([enc[i] for i in idx], pad).items()}
                labels = batch["labels"][:, 1:]
                mask = labels != IGNORE
                # Logits only where an answer token is predicted: the vocabulary projection of the prompt positions
                # would cost a fifth of SmolLM2's forward (49k x 576 per token) for nothing.
                keep = torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1)
                ids, attn = batch["input_ids"], batch["attention_mask"]
                if keep_logits:
                    rows = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
                else:
                    rows = model(input_ids=ids, attention_mask=attn).logits[keep]
                owner = torch.nonzero(mask)[:, 0]
                yield AnswerPositions(idx, rows.reshape(-1, rows.shape[-1]).float(), labels[mask], owner)
    finally:
        model.train(was_training)


def _takes_logits_to_keep(model: Any) -> bool:
    """Does the causal LM (under any PEFT wrapper) project only the positions it is asked for?"""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def answer_nll(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Any],
    batch_size: int = 32,
    max_length: int = 256,
    temperature: float = 1.0,
) -> np.ndarray:
    """Per-example mean NLL (nats per token) over the answer tokens and EOS; shape ``(len(examples),)``.

    ``temperature`` divides the logits first (temperature scaling); 1.0 is the model as it is."""
    out = np.zeros(len(examples), dtype=np.float64)
    for part in answer_positions(model, tokenizer, examples, batch_size, max_length):
        out[part.examples] = part.nll(temperature)
    return out


@dataclass
class ItemScores:
    """Per-example scores: ``nll[k]`` at ``temperatures[k]``; ``exact_match`` (None when not measured)."""

    temperatures: tuple[float, ...]
    nll: np.ndarray  # (len(temperatures), n)
    exact_match: np.ndarray | None


def score_items(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Any],
    temperatures: Sequence[float] = (1.0,),
    with_exact_match: bool = False,
    batch_size: int = 32,
    max_length: int = 256,
) -> ItemScores:
    """Answer NLL at each temperature and (optionally) exact match, from one teacher-forced pass (module doc)."""
    temps = tuple(float(t) for t in temperatures)
    n = len(examples)
    nll = np.zeros((len(temps), n), dtype=np.float64)
    gold: list[list[int]] = [[] for _ in range(n)]
    best: list[list[int]] = [[] for _ in range(n)]
    for part in answer_positions(model, tokenizer, examples, batch_size, max_length):
        for k, t in enumerate(temps):
            nll[k, part.examples] = part.nll(t)
        if with_exact_match:
            argmax = part.logits.argmax(-1).tolist()
            for row, (owner, target) in enumerate(zip(part.owner.tolist(), part.targets.tolist(), strict=True)):
                gold[part.examples[owner]].append(target)
                best[part.examples[owner]].append(argmax[row])
    em = None
    if with_exact_match and n:
        em = np.zeros(n, dtype=np.float64)
        todo = []
        for i, e in enumerate(examples):
            verdict = _teacher_forced_match(tokenizer, gold[i], best[i], e.answer)
            if verdict is None:
                todo.append(i)
            else:
                em[i] = verdict
        if todo:  # what the teacher-forced pass cannot settle is decoded
            sub = [examples[i] for i in todo]
            max_new = default_max_new_tokens(tokenizer, [e.answer for e in sub])
            preds = greedy_answers(model, tokenizer, [e.question for e in sub], max_new, batch_size)
            for i, p in zip(todo, preds, strict=True):
                em[i] = float(_normalise(p) == _normalise(examples[i].answer))
    return ItemScores(temps, nll, em)


def _teacher_forced_match(tokenizer: Any, gold: list[int], best: list[int], answer: str) -> float | None:
    """Exact match (1.0/0.0) settled from the argmax at each answer position, or None when decoding must settle it.

    Greedy decoding emits the argmax after the prompt; while it has emitted the answer's own tokens its context is
    the teacher-forced one, so it follows ``best`` up to the first position ``k`` where ``best`` leaves ``gold``.
    Its text then starts with the answer's first ``k`` tokens and ``best[k]``: if that ends the answer (EOS or a
    newline) the result is known; if that text cannot begin the answer, it is a miss; otherwise it is decoded."""
    eos = eos_id(tokenizer)
    want = _normalise(answer)
    k = next((j for j, (g, b) in enumerate(zip(gold, best, strict=True)) if g != b), None)
    if k is None or best[k] == eos:  # the answer's tokens (all, or the first k) and then EOS
        emitted = [t for t in (gold if k is None else gold[:k]) if t != eos]
        return float(_normalise(tokenizer.decode(emitted, skip_special_tokens=True).split("\n")[0]) == want)
    text = tokenizer.decode(gold[:k] + [best[k]], skip_special_tokens=True)
    if "\n" in text:  # decoding stops at a newline
        return float(_normalise(text.split("\n")[0]) == want)
    start = _normalise(text)
    return None if want.startswith(start) else 0.0


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
    stops = _stop_ids(tokenizer).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in _chunks(order, batch_size):
                rows = _greedy_batch(model, [prompts[i] for i in idx], pad, eos, stops, max_new_tokens, device)
                for i, text in zip(idx, rows, strict=True):
                    answers[i] = tokenizer.decode(text, skip_special_tokens=True).split("\n")[0].strip()
    finally:
        model.train(was_training)
    return answers


@functools.lru_cache(maxsize=8)
def _stop_ids(tokenizer: Any) -> torch.Tensor:
    """A bool mask over the vocabulary: EOS and every token whose text holds a newline (the answer has ended)."""
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    mask = torch.tensor(["\n" in t for t in texts], dtype=torch.bool)
    mask[eos_id(tokenizer)] = True
    return mask


def _greedy_batch(
    model: Any,
    prompts: list[list[int]],
    pad: int,
    eos: int,
    stops: torch.Tensor,
    max_new_tokens: int,
    device: torch.device,
) -> list[list[int]]:
    # A hand-written loop (left padding, explicit position ids, KV cache) behaves the same on GPT-2 and
    # Llama, with or without a PEFT wrapper, and stops as soon as every row has ended its answer.
    ids, mask = left_pad(prompts, pad)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    last = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}  # the prompt's last position only
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last)
    generated: list[torch.Tensor] = []
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        nxt = out.logits[:, -1, :].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        generated.append(nxt)
        done |= stops[nxt.clamp(max=len(stops) - 1)]
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
