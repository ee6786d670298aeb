"""Answer contexts: the token position at which a model states an answer."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from remnant.errors import RemnantError
from remnant.models.model import Model
from remnant.scoring.generation import generate
from remnant.scoring.prompts import (
    Style,
    answer_prefix,
    encode_answers,
    encode_prompts,
    format_prompt,
)
from remnant.targets.model import QAItem


@dataclasses.dataclass(frozen=True)
class AnswerContext:
    """Where an answer is read: the token ids that precede it, the answer's first token, and
    the generated text the prompt was extended by ("" when read right after the prompt)."""

    ids: tuple[int, ...]
    answer_id: int
    extension: str


def answer_contexts(
    model: Model,
    items: Sequence[QAItem],
    style: Style,
    *,
    from_generation: bool = True,
    generations: Sequence[str] | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[AnswerContext]:
    """Per item, the position at which the model states the answer.

    Chat models seldom answer with the bare answer ("The capital is Paris."), so the first
    token of the reference answer right after the prompt is unlikely even when the model knows
    it. With ``from_generation`` the prompt is extended by the model's own greedy answer up to
    the first accepted answer in it; items whose generation holds no accepted answer (and
    every item without ``from_generation``) are read right after the prompt, against the
    reference answer. Leading whitespace-only answer tokens are moved into the context.
    ``generations`` (one per item) are greedy answers already made, e.g. by
    `known_forget_generations`; without them the model generates ``max_new_tokens`` in batches
    of ``batch_size``.
    """
    tokenizer = model.tokenizer
    prompts = encode_prompts(model, [format_prompt(model, i.question, style) for i in items], style)
    answers = encode_answers(model, [i.answer for i in items], style)
    extensions = [""] * len(items)
    if from_generation:
        texts = generations
        if texts is None:
            texts = generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        elif len(texts) != len(items):
            raise RemnantError(f"{len(texts)} generations for {len(items)} items")
        for k, (item, text) in enumerate(zip(items, texts)):
            span = _first_answer(text, item.accepted_answers)
            if span is None:
                continue
            prefix, answer = text[: span[0]], text[span[0] : span[1]]
            if prefix.endswith(" "):
                prefix, answer = prefix[:-1], " " + answer
            elif not prefix:  # the answer opens the generation, after the style's separator
                answer = answer_prefix(style) + answer
            prompts[k] = prompts[k] + tokenizer(prefix, add_special_tokens=False).input_ids
            answers[k] = tokenizer(answer, add_special_tokens=False).input_ids
            extensions[k] = prefix
    for prompt, answer in zip(prompts, answers):
        while len(answer) > 1 and not tokenizer.decode(answer[:1]).strip():
            prompt.append(answer.pop(0))
    return [AnswerContext(tuple(p), a[0], e) for p, a, e in zip(prompts, answers, extensions)]


def _first_answer(text: str, accepted: Sequence[str]) -> tuple[int, int] | None:
    """Character span of the earliest accepted answer in ``text`` (whole words, any case)."""
    spans = [
        match.span()
        for answer in accepted
        if (match := re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, re.IGNORECASE))
    ]
    return min(spans) if spans else None
