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


@dataclasses.dataclass(frozen=True)
class EvalResult(Result):
    """Behavioural scores of one model on one target, split by forget / retain / mcq."""

    kind = "eval"

    model: dict[str, Any]
    target: str
    settings: dict[str, Any]
    splits: dict[str, Any]


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
    recorded = dataclasses.asdict(settings) | {
        "prompt_style": resolve_style(model, settings.prompt_style)
    }
    return EvalResult(model.identity(), target.name, recorded, splits)
