"""Evaluating a model on a whole target: forget, retain and multiple-choice scores."""

from __future__ import annotations

import dataclasses
from typing import Any

from remnant.models.model import Model
from remnant.results import Result
from remnant.scoring.mcq import score_mcq
from remnant.scoring.prompts import resolve_style
from remnant.scoring.qa import score_qa
from remnant.settings import ScoringSettings
from remnant.targets.model import Target

_HEADLINE = ("n", "accuracy", "ci", "answered_accuracy")
_MCQ_HEADLINE = ("likelihood_accuracy", "chance")


@dataclasses.dataclass(frozen=True)
class EvalResult(Result):
    """Behavioural scores of one model on one target, split by forget / retain / mcq."""

    kind = "eval"

    model: dict[str, Any]
    """The scored model's identity (`Model.identity`: name, source, content hash, shape)."""
    target: str
    """The target's name."""
    settings: dict[str, Any]
    """The `ScoringSettings` used, with ``prompt_style`` as resolved for the model."""
    splits: dict[str, Any]
    """Scores by split: ``forget`` and ``retain`` (`score_qa` summaries: greedy accuracy with
    its 95% bootstrap CI, by the items' match mode named in ``match``; accuracy over answered
    items; mean answer log-probability in nats; per-item rows) and ``mcq`` (`score_mcq`:
    accuracy by answer letter and by choice likelihood, chance level). A split the target has
    no items for is absent."""

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per split: n, accuracy, ci, answered_accuracy (QA splits also the match mode; mcq
        also likelihood_accuracy and chance)."""
        out: dict[str, dict[str, Any]] = {}
        for split, scores in self.splits.items():
            keys = _HEADLINE + (_MCQ_HEADLINE if split == "mcq" else ("match",))
            out[split] = {key: scores.get(key) for key in keys}
        return out


def evaluate(
    model: Model, target: Target, settings: ScoringSettings = ScoringSettings()
) -> EvalResult:
    """Score the forget and retain QA items (and MCQ items, if any) of ``target``."""
    splits: dict[str, Any] = {}
    for split in ("forget", "retain"):
        items = getattr(target, split)
        if items:
            splits[split] = score_qa(model, items, settings)
    if target.mcq:
        splits["mcq"] = score_mcq(model, target.mcq, settings)
    recorded = settings.record(prompt_style=resolve_style(model, settings.prompt_style))
    return EvalResult(model.identity(), target.name, recorded, splits)
