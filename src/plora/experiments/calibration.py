"""Temperature scaling: one temperature per model, fitted on items no evaluation uses, to part calibration from
information.

    >>> from plora.data import load_examples
    >>> from plora.experiments.calibration import fit_temperature
    >>> from plora.models import load_base
    >>> from plora.training.metrics import answer_nll
    >>> base = load_base("plora-tiny")
    >>> calibration = load_examples("legal", split="calibration", samples=64, seed=0)
    >>> t = fit_temperature(base.model, base.tokenizer, calibration)
    >>> round(t, 1)                          # plora-tiny is over-confident on legal answers
    1.5
    >>> dev = load_examples("legal", split="dev", samples=64, seed=0)
    >>> raw, scaled = (answer_nll(base.model, base.tokenizer, dev, temperature=x).mean() for x in (1.0, t))
    >>> bool(scaled < raw)                   # on items the fit never saw
    True

A model that is merely over-confident loses NLL to anything that flattens its answer distribution, a random adapter
included. Dividing its logits by the temperature ``T`` that minimises its NLL on held-out items (Guo et al. 2017,
"On Calibration of Modern Neural Networks") removes that part; what NLL gain remains is information. The fit
minimises the same statistic the experiment reports: the mean over items of each item's mean answer-token NLL.

``beta = 1/T`` is found by Newton's method: the NLL is convex in ``beta`` (its second derivative is the variance of
the logits under the model's own distribution), so a few steps reach the minimum; each step is one pass over the
stored answer-position logits, in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

MIN_T, MAX_T = 0.05, 20.0


def fit_temperature_from_logits(
    parts: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], max_steps: int = 50, tol: float = 1e-7
) -> float:
    """The temperature minimising ``sum(weight * NLL(logits / T, target))`` over rows of ``(logits, targets, weights)``.

    Rows are answer positions; weights make each item count once (1 / its rows / number of items)."""
    beta = 1.0
    for _ in range(max_steps):
        grad = hess = 0.0
        for logits, targets, weights in parts:
            z = logits.double()
            p = torch.softmax(beta * z, dim=-1)
            mean = (p * z).sum(-1)
            var = (p * z * z).sum(-1) - mean * mean
            w = weights.double()
            grad += float((w * (mean - z.gather(1, targets[:, None]).squeeze(1))).sum())
            hess += float((w * var.clamp(min=0)).sum())
        if hess <= 0:
            break  # flat logits: no temperature changes anything
        new = min(max(beta - grad / hess, beta / 2, 1 / MAX_T), beta * 2, 1 / MIN_T)
        if abs(new - beta) < tol:
            beta = new
            break
        beta = new
    return 1.0 / beta


def fit_temperature(model: Any, tokenizer: Any, examples: Sequence[Any], batch_size: int = 32) -> float:
    """One temperature for ``model``, fitted on ``examples`` (give items that no evaluation uses)."""
    from plora.training.metrics import answer_positions

    parts = []
    for part in answer_positions(model, tokenizer, examples, batch_size=batch_size):
        rows = torch.bincount(part.owner, minlength=len(part.examples)).double()
        weights = 1.0 / rows[part.owner] / len(examples)
        parts.append((part.logits, part.targets, weights))
    return fit_temperature_from_logits(parts) if parts else 1.0
