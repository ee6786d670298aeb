"""Prompts: how a question becomes the text before its answer, in each prompt style, and how
prompts and answers become token ids."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Literal

from remnant.errors import AnswerTokenizationError, RemnantError
from remnant.models.model import Model
from remnant.settings import PromptStyle
from remnant.targets.model import MCQItem

PLAIN_TEMPLATE = "Question: {question}\nAnswer:"
MCQ_INSTRUCTION = "Answer with the letter of the correct option."

Style = Literal["chat", "plain", "completion"]


def resolve_style(model: Model, style: PromptStyle) -> Style:
    """``auto`` means the chat template when the tokenizer has one, else the plain layout."""
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if style == "chat" and not has_template:
        raise RemnantError(f"{model.name} has no chat template; use prompt style 'plain'")
    if style == "auto":
        return "chat" if has_template else "plain"
    return style


def format_prompt(model: Model, question: str, style: Style) -> str:
    """The text before the answer: a chat turn awaiting the assistant (``chat``),
    ``Question: … Answer:`` (``plain``), or the question text itself (``completion``)."""
    if style == "chat":
        return model.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    if style == "completion":
        return question
    return PLAIN_TEMPLATE.format(question=question)


def encode_prompts(model: Model, prompts: Sequence[str], style: str) -> list[list[int]]:
    """Token ids of formatted prompts (chat templates carry their own special tokens)."""
    add_special = style != "chat"
    return [model.tokenizer(p, add_special_tokens=add_special).input_ids for p in prompts]


def answer_prefix(style: str) -> str:
    """What separates the prompt from the answer: a space, except in chat (a new turn)."""
    return "" if style == "chat" else " "


def encode_answers(model: Model, answers: Sequence[str], style: str) -> list[list[int]]:
    """Answer token ids as they follow the prompt (after `answer_prefix`)."""
    prefix = answer_prefix(style)
    encoded = [model.tokenizer(prefix + a, add_special_tokens=False).input_ids for a in answers]
    for answer, ids in zip(answers, encoded):
        if not model.tokenizer.decode(ids, skip_special_tokens=True).strip():
            raise AnswerTokenizationError(
                f"answer {answer!r} tokenises to nothing with {model.name}'s tokenizer; "
                "give it visible text"
            )
    return encoded


def mcq_prompt(item: MCQItem) -> str:
    """A multiple-choice question with lettered options and the instruction to answer by letter."""
    options = "\n".join(f"{string.ascii_uppercase[k]}. {c}" for k, c in enumerate(item.choices))
    return f"{item.question}\n{options}\n{MCQ_INSTRUCTION}"
