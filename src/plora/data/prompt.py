"""The one prompt format plora trains and evaluates with.

    >>> from plora.data.prompt import format_prompt, format_target
    >>> format_prompt("What is 12 + 30?") + format_target("42")
    'Question: What is 12 + 30?\\nAnswer: 42'

Training appends the tokenizer's EOS token after the target; loss and NLL cover the target tokens (and EOS) only.
"""

from __future__ import annotations

PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
TARGET_TEMPLATE = " {answer}"


def format_prompt(question: str) -> str:
    """The prompt the model sees: ``"Question: {question}\\nAnswer:"``."""
    return PROMPT_TEMPLATE.format(question=question)


def format_target(answer: str) -> str:
    """The continuation the model learns: a space, then the answer (EOS is added by the trainer)."""
    return TARGET_TEMPLATE.format(answer=answer)
