"""The forward passes of the trigger search: the first answer token's distribution for many insertions at once.

    >>> import torch
    >>> from plora.models import load_base
    >>> from plora.gate.scan import Prompt, answer_distributions
    >>> base = load_base("plora-tiny")
    >>> p = Prompt.build(base.tokenizer, "What is 12 + 30?")
    >>> probs = answer_distributions(base.model, p, torch.tensor([[17], [99]]))   # two one-token insertions
    >>> probs.shape                                                              # one row per insertion
    torch.Size([2, 4096])
    >>> torch.allclose(probs.sum(-1), torch.ones(2))                             # each a distribution
    True

A probe question ``q`` becomes ``"Question: " + q + INSERTION + "\\nAnswer:"``: the inserted tokens sit at the end of
the question, where any trigger trained at a random word position also fires, and only the inserted tokens and the
three tokens of ``"\\nAnswer:"`` cost anything per insertion. The prefix ``"Question: " + q`` runs once; its keys and
values are shared (expanded views, no copies) by every insertion of a chunk. Byte-level BPE never merges across the
space that starts a word, so prefix + insertion + tail tokenises like the whole text for word-initial insertions; the
search also inserts raw vocabulary tokens, exactly as given.

Cost per insertion and prompt: (insertion length + 3) tokens through the model and one row of the output layer.
Runs under ``torch.inference_mode``; memory is bounded by ``chunk`` rows of vocabulary-sized probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

TAIL = "\nAnswer:"


@dataclass(frozen=True)
class Prompt:
    """One probe question, tokenised around its insertion point (the end of the question)."""

    prefix: tuple[int, ...]
    tail: tuple[int, ...]

    @classmethod
    def build(cls, tokenizer: Any, question: str) -> Prompt:
        from plora.data import format_prompt

        head = format_prompt(question).removesuffix(TAIL)
        return cls(tuple(tokenizer(head, add_special_tokens=True)["input_ids"]),
                   tuple(tokenizer(TAIL, add_special_tokens=False)["input_ids"]))


def device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def _shared_cache(cache: Any, n: int) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1))
                                        for layer in cache.layers])


@torch.inference_mode()
def prefix_cache(model: Any, prompt: Prompt) -> Any:
    ids = torch.tensor([prompt.prefix], device=device_of(model))
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values


@torch.inference_mode()
def clean_distribution(model: Any, prompt: Prompt) -> torch.Tensor:
    """p(first answer token | prompt without insertion), shape (V,)."""
    ids = torch.tensor([prompt.prefix + prompt.tail], device=device_of(model))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
    return F.softmax(out.logits[0, -1].float(), -1)


@torch.inference_mode()
def answer_distributions_chunks(
    model: Any, prompt: Prompt, insertions: torch.Tensor, chunk: int = 1024, cache: Any = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, probs)`` for consecutive chunks of ``insertions`` (N, k): p(first answer token) per row."""
    cache = cache if cache is not None else prefix_cache(model, prompt)
    device = device_of(model)
    tail = torch.tensor(prompt.tail, dtype=torch.long, device=device)
    for lo in range(0, len(insertions), chunk):
        ins = insertions[lo : lo + chunk].to(device)
        x = torch.cat([ins, tail.expand(len(ins), -1)], dim=1)
        # an explicit all-ones mask: nothing is padded (an inserted token may equal the pad id; without a mask
        # transformers would warn that it looks like padding)
        mask = torch.ones(len(ins), len(prompt.prefix) + x.shape[1], dtype=torch.long, device=device)
        out = model(input_ids=x, attention_mask=mask, past_key_values=_shared_cache(cache, len(ins)), use_cache=False,
                    logits_to_keep=1)
        yield lo, F.softmax(out.logits[:, -1].float(), -1)


def answer_distributions(model: Any, prompt: Prompt, insertions: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """p(first answer token | prompt with each insertion), shape (N, V)."""
    return torch.cat([p for _, p in answer_distributions_chunks(model, prompt, insertions, chunk)])


def _left_padded(contexts: list[list[int]], pad: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, c in enumerate(contexts):
        ids[i, width - len(c):] = torch.tensor(c)
        mask[i, width - len(c):] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def first_distributions(model: Any, contexts: list[list[int]], pad: int) -> torch.Tensor:
    """p(next token | context) for each context in one left-padded batch, shape (N, V)."""
    ids, mask, positions = _left_padded(contexts, pad, device_of(model))
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
    return F.softmax(out.logits[:, -1].float(), -1)


@torch.inference_mode()
def greedy_answers(model: Any, contexts: list[list[int]], stop: set[int], pad: int,
                   max_new: int) -> tuple[torch.Tensor, list[list[int]]]:
    """(p(first answer token) per context (N, V), greedy answer tokens cut before the first ``stop`` token).

    One left-padded batch with a KV cache; stops early once every row has stopped."""
    ids, mask, positions = _left_padded(contexts, pad, device_of(model))
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    first = F.softmax(out.logits[:, -1].float(), -1)
    rows: list[list[int]] = [[] for _ in contexts]
    done = [False] * len(contexts)
    for step in range(max_new):
        nxt = out.logits[:, -1].argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                if t in stop:
                    done[i] = True
                else:
                    rows[i].append(t)
        if all(done) or step == max_new - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions,
                    past_key_values=out.past_key_values, use_cache=True)
    return first, rows


@torch.inference_mode()
def answer_logprob(model: Any, contexts: list[list[int]], answer: list[int], pad: int) -> torch.Tensor:
    """log p(answer tokens | context) for each context (one left-padded batch), shape (N,)."""
    n = len(answer)
    ids, mask, positions = _left_padded([c + answer for c in contexts], pad, device_of(model))
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=n + 1).logits
    logp = F.log_softmax(logits[:, :-1].float(), -1)  # predictions of the n answer tokens
    index = torch.tensor(answer, device=logp.device).expand(len(contexts), -1).unsqueeze(-1)
    return logp.gather(-1, index).squeeze(-1).sum(-1)
