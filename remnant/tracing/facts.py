"""The facts causal tracing and cross-model patching run on, and where each answer is read.

Both analyses take the forget items the model knows (it answers them correctly under greedy
generation), or items the caller gives, and read each answer's first token where the model
states it: in its own greedy answer (``context="generation"``, reusing the generation that
answered the item) or right after the prompt (``context="prompt"``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from remnant.errors import TracingError
from remnant.models.model import Model
from remnant.scoring import (
    AnswerContext,
    answer_contexts,
    known_forget_generations,
    resolve_style,
)
from remnant.settings import ContextSettings, ScoringSettings
from remnant.targets.model import QAItem, Target

log = logging.getLogger(__name__)


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
    *,
    need_subject: bool = False,
) -> list[tuple[QAItem, AnswerContext]]:
    """The facts to run on, each with where its answer is read.

    With ``items=None`` these are the forget items ``model`` answers correctly (greedy, scored
    with ``ScoringSettings(prompt_style=..., max_new_tokens=settings.max_new_tokens)``; raises
    `NothingKnownError` when there are none), and with ``context="generation"`` their answers
    are read in the very generations that answered them. Given ``items`` are taken as they are
    and, for ``context="generation"``, answered afresh. With ``need_subject`` items whose
    subject the target cannot name are skipped (with a warning; `TracingError` if none is
    left). At most ``settings.max_facts`` facts are kept.
    """
    style = resolve_style(model, settings.prompt_style)
    generated: dict[str, str] = {}
    if items is None:
        scoring = ScoringSettings(prompt_style=style, max_new_tokens=settings.max_new_tokens)
        known = known_forget_generations(model, target, scoring)
        items, generated = [i for i, _ in known], {i.question: g for i, g in known}
    items = list(items)
    if need_subject:
        named = [i for i in items if target.subject_of(i)]
        if len(named) < len(items):
            log.warning("skipping %d item(s) that name no subject", len(items) - len(named))
        if not named:
            raise TracingError("no item to trace names its subject; give items a 'subject'")
        items = named
    items = items[: settings.max_facts]
    contexts = answer_contexts(
        model,
        items,
        style,
        from_generation=settings.context == "generation",
        generations=[generated[i.question] for i in items] if generated else None,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
    )
    return list(zip(items, contexts))
