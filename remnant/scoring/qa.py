"""Scoring QA items: greedy accuracy (alias match), answer log-probability, ROUGE-L recall;
and the forget items a model knows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from remnant.errors import NothingKnownError
from remnant.models.model import Model
from remnant.scoring.batching import generate, sequence_logprobs
from remnant.scoring.matching import alias_match, normalize, rouge_l_recall
from remnant.scoring.prompts import encode_answers, encode_prompts, format_prompt, resolve_style
from remnant.scoring.statistics import bootstrap_ci, mean
from remnant.settings import ScoringSettings
from remnant.targets.model import QAItem, Target


def score_qa(
    model: Model, items: Sequence[QAItem], settings: ScoringSettings = ScoringSettings()
) -> dict[str, Any]:
    """Greedy accuracy (alias match) over all items and over answered items (non-empty
    generation), mean answer log-probability (nats, summed and per token) and ROUGE-L recall."""
    style = resolve_style(model, settings.prompt_style)
    prompts = encode_prompts(model, [format_prompt(model, i.question, style) for i in items], style)
    answers = encode_answers(model, [i.answer for i in items], style)
    logprobs = sequence_logprobs(model, prompts, answers, batch_size=settings.batch_size)
    generations = generate(
        model, prompts, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size
    )
    rows = []
    for item, lp, text in zip(items, logprobs, generations):
        rows.append(
            {
                "question": item.question,
                "answer": item.answer,
                "generation": text,
                "correct": alias_match(text, item.accepted_answers),
                "answered": bool(normalize(text)),
                "logprob_sum": round(float(lp.sum()), 6),
                "logprob_mean": round(float(lp.mean()), 6),
                "n_answer_tokens": int(lp.size),
                "rouge_l_recall": round(rouge_l_recall(item.answer, text), 6),
            }
        )
    return _summarise(rows, settings)


def _summarise(rows: list[dict[str, Any]], settings: ScoringSettings) -> dict[str, Any]:
    correct = [float(r["correct"]) for r in rows]
    answered = [float(r["correct"]) for r in rows if r["answered"]]
    return {
        "n": len(rows),
        "accuracy": mean(correct),
        "ci": list(bootstrap_ci(correct, n_resamples=settings.n_bootstrap, seed=settings.seed)),
        "n_answered": len(answered),
        "answered_accuracy": mean(answered),
        "answered_ci": list(
            bootstrap_ci(answered, n_resamples=settings.n_bootstrap, seed=settings.seed)
        ),
        "mean_logprob_sum": mean([r["logprob_sum"] for r in rows]),
        "mean_logprob_per_token": mean([r["logprob_mean"] for r in rows]),
        "mean_rouge_l_recall": mean([r["rouge_l_recall"] for r in rows]),
        "items": rows,
    }


def known_forget_items(
    model: Model, target: Target, settings: ScoringSettings = ScoringSettings()
) -> list[QAItem]:
    """The forget items ``model`` answers correctly; raises when there are none."""
    return [item for item, _ in known_forget_generations(model, target, settings)]


def known_forget_generations(
    model: Model, target: Target, settings: ScoringSettings = ScoringSettings()
) -> list[tuple[QAItem, str]]:
    """The forget items ``model`` answers correctly, each with the greedy generation that
    answered it; raises when there are none."""
    scored = score_qa(model, target.forget, settings)["items"] if target.forget else []
    known = [
        (item, row["generation"]) for item, row in zip(target.forget, scored) if row["correct"]
    ]
    if not known:
        raise NothingKnownError(
            f"{model.name} answers none of the {len(target.forget)} forget items of target "
            f"{target.name!r}, so there is no knowledge to audit; check the target's answers, the "
            "prompt style, or that this is the original (not the unlearned) model"
        )
    return known


def split_scores(
    model: Model,
    target: Target,
    settings: ScoringSettings = ScoringSettings(),
    *,
    retain_items: Sequence[QAItem] | None = None,
    forget_scores: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Greedy accuracy, accuracy over answered items and mean answer log-probability (nats) on
    the forget and retain QA items (None for an empty split), plus the seconds it took.

    ``retain_items`` replaces the target's retain items (the held-out part of a retain split);
    ``forget_scores`` is a `score_qa` summary of the forget items already taken on these very
    weights with ``settings``, used instead of scoring them again.
    """
    started = time.perf_counter()
    scores: dict[str, Any] = {}
    retain = target.retain if retain_items is None else retain_items
    for split, items in (("forget", target.forget), ("retain", retain)):
        done = forget_scores if split == "forget" else None
        summary = done or (score_qa(model, items, settings) if items else None)
        scores[split] = summary and {
            key: summary[key] for key in ("n", "accuracy", "answered_accuracy", "mean_logprob_sum")
        }
    scores["seconds"] = round(time.perf_counter() - started, 2)
    return scores
