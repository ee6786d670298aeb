"""Prompts: how a question becomes the text before its answer, in each prompt style, and how
prompts and answers become token ids.

The prompt styles (``ScoringSettings.prompt_style``):

- ``chat``: the question as a user turn of the tokenizer's chat template, awaiting the
  assistant's turn. The template carries its own special tokens (none are added when encoding)
  and the answer opens the assistant's turn (no separator).
- ``plain``: ``Question: {question}\\nAnswer:`` (`PLAIN_TEMPLATE`), encoded with the
  tokenizer's special tokens (a BOS token, for tokenizers that add one); the answer follows
  after a space.
- ``completion``: the question text itself, verbatim, is the prompt: for cloze statements and
  fill-in-the-blank probes ("Marie Curie was born in") that the answer continues, and for base
  models that were never taught a question layout. Encoded and continued as in plain: special
  tokens added, the answer after a space (so the text should not end in the space itself;
  targets strip it anyway). A multiple-choice prompt (`mcq_prompt`: question, lettered options,
  instruction) is likewise used verbatim, the letter following after a space.
- ``auto``: chat when the tokenizer has a chat template, else plain (`resolve_style`).

The functions below other than `resolve_style` take a resolved style (chat, plain or completion)
and refuse others with a `SettingsError`: a misspelt style never falls back to another layout.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Literal, get_args

from remnant.errors import AnswerTokenizationError, SettingsError
from remnant.models.model import Model
from remnant.settings import PROMPT_STYLES, PromptStyle
from remnant.targets.model import MCQItem

PLAIN_TEMPLATE = "Question: {question}\nAnswer:"
MCQ_INSTRUCTION = "Answer with the letter of the correct option."

Style = Literal["chat", "plain", "completion"]
STYLES: tuple[str, ...] = get_args(Style)


def resolve_style(model: Model, style: PromptStyle) -> Style:
    """The style ``style`` stands for with ``model``: ``auto`` means the chat template when
    the tokenizer has one, else plain; ``chat`` needs a chat template."""
    if style not in PROMPT_STYLES:
        raise SettingsError(
            f"prompt style must be one of {', '.join(PROMPT_STYLES)}, not {style!r}"
        )
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if style == "chat" and not has_template:
        raise SettingsError(
            f"{model.name} has no chat template; use prompt style 'plain' or 'completion'"
        )
    if style == "auto":
        return "chat" if has_template else "plain"
    return style


def _resolved(style: str) -> Style:
    if style not in STYLES:
        raise SettingsError(
            f"prompt style must be a resolved one ({', '.join(STYLES)}), not {style!r}; "
            "turn 'auto' into one with resolve_style"
        )
    return style  # type: ignore[return-value]


def format_prompt(model: Model, question: str, style: Style) -> str:
    """The text before the answer: a chat turn awaiting the assistant (``chat``),
    ``Question: … Answer:`` (``plain``), or the question text itself (``completion``)."""
    return format_dialogue(model, [("user", question)], style)


Role = Literal["system", "user", "assistant"]


def format_dialogue(
    model: Model, turns: Sequence[tuple[Role, str]], style: Style, response_start: str = ""
) -> str:
    """The text before the answer to a dialogue whose last turn is the user's question.

    ``turns`` are ``(role, text)`` pairs: an optional ``system`` turn first (instructions,
    passages to read), then ``user`` and ``assistant`` turns in alternation (demonstrations).
    ``chat`` renders them through the tokenizer's chat template; ``plain`` writes the system
    text as a paragraph and each exchange as ``Question: … Answer: …``, blank lines between;
    ``completion`` writes the system text, then each question text followed by its answer on
    its own line. ``response_start`` opens the answer (a forced start such as "Sure, here is
    the answer:"), after `answer_prefix`.
    """
    style = _resolved(style)
    roles = [role for role, _ in turns]
    body = roles[1:] if roles[:1] == ["system"] else roles
    expected = ["user", "assistant"] * (len(body) // 2) + ["user"]
    if body != expected:
        raise ValueError(
            f"a dialogue is an optional system turn, then user/assistant turns ending with the "
            f"user's: got {roles}"
        )
    start = answer_prefix(style) + response_start if response_start else ""
    if style == "chat":
        messages = [{"role": role, "content": text} for role, text in turns]
        return (
            model.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            + start
        )
    blocks = [text for role, text in turns if role == "system"]
    questions = [text for role, text in turns if role == "user"]
    answers = [text for role, text in turns if role == "assistant"] + [None]
    layout = PLAIN_TEMPLATE if style == "plain" else "{question}"
    exchanges = [
        layout.format(question=q) + ("" if a is None else answer_prefix(style) + a)
        for q, a in zip(questions, answers)
    ]
    joiner = "\n\n" if style == "plain" else "\n"
    return "\n\n".join(blocks + [joiner.join(exchanges)]) + start


def adds_special_tokens(style: Style) -> bool:
    """Whether encoding a prompt of ``style`` adds the tokenizer's special tokens: yes in
    plain and completion style; no in chat, whose template writes its own."""
    return _resolved(style) != "chat"


def encode_prompts(model: Model, prompts: Sequence[str], style: Style) -> list[list[int]]:
    """Token ids of formatted prompts (with special tokens as `adds_special_tokens` says)."""
    add_special = adds_special_tokens(style)
    return [model.tokenizer(p, add_special_tokens=add_special).input_ids for p in prompts]


def answer_prefix(style: Style) -> str:
    """What separates the prompt from the answer: nothing in chat (the answer opens the
    assistant's turn), a space in plain and completion style."""
    return "" if _resolved(style) == "chat" else " "


def encode_answers(model: Model, answers: Sequence[str], style: Style) -> list[list[int]]:
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
