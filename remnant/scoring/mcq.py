"""Scoring multiple-choice items: by answer letter and by choice likelihood."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from remnant.models.model import Model
from remnant.scoring.batching import next_token_logits, sequence_logprobs
from remnant.scoring.prompts import (
    answer_prefix,
    encode_answers,
    encode_prompts,
    format_prompt,
    mcq_prompt,
    resolve_style,
)
from remnant.scoring.statistics import bootstrap_ci, mean, rounded
from remnant.settings import ScoringSettings
from remnant.targets.model import MCQItem


def score_mcq(
    model: Model, items: Sequence[MCQItem], settings: ScoringSettings = ScoringSettings()
) -> dict[str, Any]:
    """Multiple choice two ways. By letter: argmax of the option letters' next-token logits;
    an item counts as answered when the top token over the whole vocabulary is an option
    letter. By likelihood: the choice with the highest mean per-token log-probability."""
    style = resolve_style(model, settings.prompt_style)
    letter_prompts = encode_prompts(
        model, [format_prompt(model, mcq_prompt(i), style) for i in items], style
    )
    logits = next_token_logits(model, letter_prompts, batch_size=settings.batch_size)
    prefix = answer_prefix(style)
    letter_ids = [
        model.tokenizer(prefix + L, add_special_tokens=False).input_ids[0]
        for L in string.ascii_uppercase
    ]
    question_prompts = encode_prompts(
        model, [format_prompt(model, i.question, style) for i in items], style
    )
    flat_prompts, flat_choices, owner = [], [], []
    for k, item in enumerate(items):
        choice_ids = encode_answers(model, item.choices, style)
        flat_prompts += [question_prompts[k]] * len(choice_ids)
        flat_choices += choice_ids
        owner += [k] * len(choice_ids)
    choice_lp = sequence_logprobs(model, flat_prompts, flat_choices, batch_size=settings.batch_size)
    rows = []
    for k, item in enumerate(items):
        ids = letter_ids[: len(item.choices)]
        letter_pred = int(torch.argmax(logits[k, ids]))
        means = [float(lp.mean()) for lp, o in zip(choice_lp, owner) if o == k]
        likelihood_pred = int(np.argmax(means))
        rows.append(
            {
                "question": item.question,
                "answer": item.answer,
                "letter_prediction": letter_pred,
                "correct": letter_pred == item.answer,
                "answered": int(torch.argmax(logits[k])) in ids,
                "likelihood_prediction": likelihood_pred,
                "likelihood_correct": likelihood_pred == item.answer,
                "choice_logprob_mean": [rounded(m) for m in means],
            }
        )
    correct = [float(r["correct"]) for r in rows]
    answered = [float(r["correct"]) for r in rows if r["answered"]]
    likelihood = [float(r["likelihood_correct"]) for r in rows]
    ci = dict(n_resamples=settings.n_bootstrap, seed=settings.seed)
    return {
        "n": len(rows),
        "accuracy": mean(correct),
        "ci": list(bootstrap_ci(correct, **ci)),
        "n_answered": len(answered),
        "answered_accuracy": mean(answered),
        "answered_ci": list(bootstrap_ci(answered, **ci)),
        "likelihood_accuracy": mean(likelihood),
        "likelihood_ci": list(bootstrap_ci(likelihood, **ci)),
        "chance": mean([1 / len(i.choices) for i in items]),
        "items": rows,
    }
