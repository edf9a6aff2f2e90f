"""Which items a value-add cell trains on and is measured on: the two questions, verbatim recall, calibration.

    >>> from plora.experiments.items import cell_items
    >>> items = cell_items("science", samples=128, seed=41, dev_size=256, calibration_size=128)
    >>> len(items.train), len(items.knowledge) <= len(items.train), len(items.skill)
    (128, True, 256)

- ``train``: the plasmid's training items, drawn by the cell's seed from the ``train`` split (trained wordings only);
- ``knowledge`` (*knowledge carried*): the same facts asked in the wording held out from training, one item per
  trained statement (fact and question type) that has one: what a recipient gains from the donor's plasmid;
- ``recall`` (*verbatim recall*): the training items themselves, reported beside knowledge;
- ``skill``: ``dev_size`` items of the ``dev`` split, facts never trained in any wording: what generalises;
- ``calibration``: ``calibration_size`` items of the ``calibration`` split, facts no other set holds, on which each
  arm's temperature is fitted.

The splits are made over facts (``plora.data.splits``), so skill and calibration items share no fact with training,
and knowledge items share their facts with training but never a question text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from plora.data import QA, domain_items, load_examples


@dataclass(frozen=True)
class CellItems:
    train: list[QA]
    knowledge: list[QA]
    recall: list[QA]
    skill: list[QA]
    calibration: list[QA]


@functools.cache
def _held_out_wording(domain: str) -> dict[tuple[str, str], QA]:
    """The first paraphrase item of each statement, in the table's fixed order."""
    out: dict[tuple[str, str], QA] = {}
    for qa in domain_items(domain, "paraphrase"):
        out.setdefault(qa.statement, qa)
    return out


def knowledge_items(domain: str, trained: list[QA]) -> list[QA]:
    """One held-out-wording item per statement of ``trained`` (in the order first trained) that has one."""
    held = _held_out_wording(domain)
    seen: set[tuple[str, str]] = set()
    out = []
    for qa in trained:
        if qa.statement not in seen and qa.statement in held:
            seen.add(qa.statement)
            out.append(held[qa.statement])
    return out


def training_items(domain: str, samples: int | None, seed: int) -> list[QA]:
    """What a cell's plasmid trains on (``samples`` is the effective count, PLORA_SAMPLES applied)."""
    return load_examples(domain, split="train", samples=samples, seed=seed)


def skill_items(domain: str, size: int) -> list[QA]:
    return load_examples(domain, split="dev", samples=size, seed=0)


def calibration_items(domain: str, size: int) -> list[QA]:
    return load_examples(domain, split="calibration", samples=size, seed=0)


def cell_items(domain: str, samples: int | None, seed: int, dev_size: int, calibration_size: int) -> CellItems:
    train = training_items(domain, samples, seed)
    return CellItems(
        train=train,
        knowledge=knowledge_items(domain, train),
        recall=train,
        skill=skill_items(domain, dev_size),
        calibration=calibration_items(domain, calibration_size),
    )
