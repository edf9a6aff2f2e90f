"""The monolithic baseline: one plasmid trained on the union of several domains.

    >>> from plora.training.monolithic import train_monolithic
    >>> m = train_monolithic(["arithmetic", "legal"], out="out/monolithic_r4", samples=16, dev_size=8,
    ...                      progress=False)
    >>> m.domain, m.training.samples
    ('arithmetic+legal', 32)

``samples`` caps each domain's draw (so the union holds up to ``samples * len(domains)`` items, the
same data that per-domain plasmids with ``--samples`` see together); the dev metrics are measured on
the union of the domains' dev splits (``dev_size`` items per domain). Exact match is measured only if
every domain has short answers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from plora.errors import DataError
from plora.training.config import TrainConfig, domain_label
from plora.training.lora import short_answers, train_and_write


def train_monolithic(
    domains: Sequence[str], out: str | os.PathLike[str], *, progress: bool = True, **fields: Any
) -> Any:
    """Train one plasmid on the union of ``domains`` and write it to ``out``; returns its manifest.

    ``fields`` are :class:`plora.training.config.TrainConfig` fields (``samples`` caps each domain), with its
    defaults."""
    from plora.data import dataset_id, load_examples
    from plora.settings import effective_samples

    names = [d.strip() for d in domains if d.strip()]
    if not names:
        raise DataError("give at least one domain")
    if len(set(names)) != len(names):
        raise DataError(f"domains repeat: {','.join(names)}")
    cfg = TrainConfig(domain="+".join(names), out=out, **fields)
    cfg.validate()
    cap = effective_samples(cfg.samples)
    train: list[Any] = []
    dev: list[Any] = []
    for name in names:
        kw = {"question_field": cfg.question_field, "answer_field": cfg.answer_field}
        train.extend(load_examples(name, split="train", samples=cap, seed=cfg.seed, **kw))
        if cfg.dev_size:
            dev.extend(load_examples(name, split="dev", samples=cfg.dev_size, seed=0, **kw))
    return train_and_write(
        cfg,
        train,
        dev,
        domain="+".join(domain_label(n) for n in names)[:64],
        dataset="+".join(dataset_id(n) for n in names)[:512],
        short_answers=all(short_answers(n) for n in names),
        progress=progress,
    )
