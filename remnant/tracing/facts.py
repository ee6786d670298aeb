"""The facts causal tracing and cross-model patching run on, and where each answer is read.

Both analyses take the forget items the model knows (it answers them correctly under greedy
generation), or items the caller gives, and read each answer's first token where the model
states it: in its own greedy answer (``context="generation"``, reusing the generation that
answered the item) or right after the prompt (``context="prompt"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from remnant.models.model import Model
from remnant.scoring import (
    AnswerContext,
    answer_contexts,
    known_forget_generations,
    resolve_style,
)
from remnant.settings import ContextSettings, ScoringSettings
from remnant.targets.model import QAItem, Target


@dataclasses.dataclass(frozen=True, kw_only=True)
class FactSettings(ContextSettings):
    """Settings of the analyses that run fact by fact (causal tracing, cross-model patching).

    ``max_new_tokens`` bounds the greedy answers that decide which forget items the model knows
    and, with ``context="generation"``, where each answer is read."""

    batch_size: int = 64
    """Patched rows per forward pass (and prompts per generation batch of the answer contexts;
    the known-facts scoring uses `ScoringSettings`'s batch size)."""
    max_facts: int | None = None
    """Run on at most this many facts (the first ones); None: all."""


def known_fact_contexts(
    model: Model,
    target: Target,
    settings: FactSettings,
    items: Sequence[QAItem] | None = None,
) -> list[tuple[QAItem, AnswerContext]]:
    """The facts to run on, each with where its answer is read: `fact_contexts` of
    `known_items`."""
    return fact_contexts(model, settings, *known_items(model, target, settings, items))


def known_items(
    model: Model,
    target: Target,
    settings: FactSettings,
    items: Sequence[QAItem] | None = None,
) -> tuple[list[QAItem], dict[str, str]]:
    """The items to run on and, by question, the greedy generation that answered each.

    With ``items=None`` these are the forget items ``model`` answers correctly (greedy, scored
    with ``ScoringSettings(prompt_style=..., max_new_tokens=settings.max_new_tokens)``; raises
    `NothingKnownError` when there are none) with their generations. Given ``items`` are taken
    as they are, without generations (`fact_contexts` answers them afresh).
    """
    if items is not None:
        return list(items), {}
    style = resolve_style(model, settings.prompt_style)
    scoring = ScoringSettings(prompt_style=style, max_new_tokens=settings.max_new_tokens)
    known = known_forget_generations(model, target, scoring)
    return [i for i, _ in known], {i.question: g for i, g in known}


def fact_contexts(
    model: Model,
    settings: FactSettings,
    items: Sequence[QAItem],
    generations: dict[str, str] | None = None,
) -> list[tuple[QAItem, AnswerContext]]:
    """The first ``settings.max_facts`` of ``items``, each with where its answer is read: with
    ``context="generation"`` in its generation in ``generations`` (by question; when that is
    empty, in a greedy answer generated afresh), else right after the prompt."""
    style = resolve_style(model, settings.prompt_style)
    items = list(items)[: settings.max_facts]
    contexts = answer_contexts(
        model,
        items,
        style,
        from_generation=settings.context == "generation",
        generations=[generations[i.question] for i in items] if generations else None,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.generation_batch_size,
    )
    return list(zip(items, contexts))
