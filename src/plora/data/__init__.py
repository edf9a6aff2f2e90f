"""Question/answer data for plasmids: built-in domains, file and hub loaders, the prompt format.

    >>> from plora.data import load_examples, format_prompt, format_target
    >>> qa = load_examples("arithmetic", split="dev", samples=1, seed=0)[0]
    >>> text = format_prompt(qa.question) + format_target(qa.answer)  # the trainer appends EOS

Built-in domains (``DOMAINS``) come from real tables in registry packages (ICD-10-CM, Free Law Project reporters and
courts, the periodic table, pint) plus plora's own arithmetic, with train/dev/test split 80/10/10 over the underlying
facts (plus ``paraphrase``: train facts in a wording held out from training, and ``calibration``: half of the test
facts). The pre-training corpus for plora-tiny lives in :mod:`plora.data.corpus`.
"""

from __future__ import annotations

from plora.data.domains import (
    DOMAINS,
    DomainInfo,
    domain_digest,
    domain_info,
    domain_items,
    domain_stats,
    question_types,
)
from plora.data.loaders import dataset_id, load_examples
from plora.data.prompt import PROMPT_TEMPLATE, format_prompt, format_target
from plora.data.qa import QA
from plora.data.splits import BUILTIN_SPLITS, SPLITS, split_of

__all__ = [
    "BUILTIN_SPLITS",
    "DOMAINS",
    "PROMPT_TEMPLATE",
    "QA",
    "SPLITS",
    "DomainInfo",
    "dataset_id",
    "domain_digest",
    "domain_info",
    "domain_items",
    "domain_stats",
    "format_prompt",
    "format_target",
    "load_examples",
    "question_types",
    "split_of",
]
