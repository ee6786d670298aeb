"""Validate located concept vectors causally: intervene on each (through hooks, the model's
weights untouched) and compare the damage with the same intervention on random value vectors.

Measures, over the target's forget and retain QA items (prompted as in `remnant.scoring`):
mean answer log-probability (nats, summed over answer tokens, mean over items) and greedy
accuracy (alias match, ``scoring.max_new_tokens`` new tokens). A *drop* is baseline minus
intervened (positive = the intervention hurt).

Criterion: a candidate is *validated* when its forget drop exceeds the ``percentile`` (95th)
of the random vectors' forget drops and its retain drop does not exceed the largest random
retain drop, both in the ``criterion`` measure: ``logprob`` (default; continuous, and needs no
generation) or ``accuracy`` (greedy accuracy: what a user sees, but over a few dozen items it
moves in steps of one item, and the 95th percentile of 20 draws is often a single item). The
other measure is reported beside it. With n candidates tested at the 95th percentile, about
n x 0.05 pass by chance (``expected_false_positives``).

Random reference: ``n_random`` distinct value vectors, draw j in the layer of candidate
j mod n_candidates (the candidates' layer mix), index uniform, located candidates excluded,
seeded. Set ablation: all validated vectors at once (all candidates if none validates, said in
``set_ablation["source"]``) against ``n_random_sets`` random sets with one random vector in the
layer of each member.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from remnant.concept_vectors.interventions import Mode, check_mode, intervention_hooks
from remnant.concept_vectors.locate import LocateResult, LocateSettings, locate
from remnant.concept_vectors.vectors import VectorRef, random_vectors
from remnant.errors import ConceptVectorError
from remnant.models.model import Model
from remnant.results import Result
from remnant.scoring import (
    ScoringSettings,
    alias_match,
    encode_answers,
    encode_prompts,
    format_prompt,
    generate,
    resolve_style,
    sequence_logprobs,
)
from remnant.targets.model import Target

log = logging.getLogger(__name__)

CRITERION = (
    "validated = forget {measure} drop > {percentile:g}th percentile of the random vectors' "
    "forget {measure} drops AND retain {measure} drop <= the largest random retain {measure} "
    "drop (drops are baseline minus intervened; {unit})"
)
UNITS = {
    "logprob": "log-prob in nats: mean over items of the summed answer log-probability",
    "accuracy": "greedy accuracy: fraction of items whose generation matches an accepted answer",
}
MEASURES = ("forget_logprob", "retain_logprob", "forget_accuracy", "retain_accuracy")


@dataclasses.dataclass(frozen=True)
class ValidateSettings:
    """``n_candidates`` top located vectors are tested with intervention ``mode`` (``sigma``:
    noise standard deviation) against ``n_random`` random vectors; ``criterion`` (``logprob`` or
    ``accuracy``) and ``percentile`` set the criterion; ``greedy`` also scores greedy accuracy
    per vector (costly: a generation per vector; required by the accuracy criterion); ``n_random_sets`` random sets for the set ablation; ``seed`` fixes every draw;
    ``scoring`` prompts and batches the items (16 new tokens by default)."""

    n_candidates: int = 10
    mode: Mode = "zero"
    sigma: float = 0.1
    n_random: int = 20
    criterion: Literal["logprob", "accuracy"] = "logprob"
    percentile: float = 95.0
    greedy: bool = True
    n_random_sets: int = 5
    seed: int = 0
    scoring: ScoringSettings = ScoringSettings(batch_size=64, max_new_tokens=16)
    locate: LocateSettings = LocateSettings()

    def __post_init__(self) -> None:
        check_mode(self.mode, self.sigma)
        if self.n_candidates < 1 or self.n_random < 20 or self.n_random_sets < 1:
            raise ConceptVectorError(
                "need n_candidates >= 1, n_random >= 20 (a percentile of fewer draws is noise) "
                "and n_random_sets >= 1"
            )
        if self.criterion not in UNITS:
            raise ConceptVectorError(
                f"criterion must be 'logprob' or 'accuracy', not {self.criterion!r}"
            )
        if self.criterion == "accuracy" and not self.greedy:
            raise ConceptVectorError("the accuracy criterion needs greedy=True")
        if not 0 < self.percentile < 100:
            raise ConceptVectorError(f"percentile must lie in (0, 100), not {self.percentile}")


@dataclasses.dataclass(frozen=True)
class ValidateResult(Result):
    """Causal validation of located vectors (see module docstring for measures and criterion).

    ``baseline``: the four measures without intervention. ``candidates`` / ``random``: per
    vector the measures under intervention and their drops (``*_drop``; accuracy ones None when
    ``greedy`` is off), candidates also with located score, sign, top tokens, ``p_value``
    ((1 + random draws whose forget drop in the criterion measure is at least as large) /
    (1 + n_random)) and ``validated``. ``thresholds``: the criterion's measure and cut-offs.
    ``expected_false_positives``: n_candidates x (1 - percentile / 100). ``set_ablation``: the chosen set and
    its measures and drops beside each random set's, and the random sets' mean drops.
    """

    kind = "validate"

    model: dict[str, Any]
    target: str
    settings: dict[str, Any]
    criterion: str
    n_forget: int
    n_retain: int
    n_interventions: int
    baseline: dict[str, float | None]
    candidates: list[dict[str, Any]]
    random: list[dict[str, Any]]
    thresholds: dict[str, Any]
    n_validated: int
    expected_false_positives: float
    set_ablation: dict[str, Any]

    def validated_vectors(self) -> list[VectorRef]:
        """(layer, index) of the validated candidates, best located first."""
        return [(c["layer"], c["index"]) for c in self.candidates if c["validated"]]


class InterventionScorer:
    """Scores the forget and retain items under interventions; prompts are encoded once and
    each measurement is one batched log-prob pass (and one batched generation)."""

    def __init__(self, model: Model, target: Target, settings: ScoringSettings) -> None:
        if not target.forget or not target.retain:
            raise ConceptVectorError(
                f"target {target.name!r} needs forget and retain QA items to validate vectors"
            )
        self.model = model
        self.settings = settings
        self.style = resolve_style(model, settings.prompt_style)
        items = [*target.forget, *target.retain]
        self.n_forget = len(target.forget)
        self.accepted = [item.accepted_answers for item in items]
        self.prompts = encode_prompts(
            model, [format_prompt(model, i.question, self.style) for i in items], self.style
        )
        self.answers = encode_answers(model, [i.answer for i in items], self.style)

    def measure(
        self, vectors: Sequence[VectorRef], mode: Mode, sigma: float, seed: int, greedy: bool
    ) -> dict[str, float | None]:
        """Mean answer log-prob (nats) and greedy accuracy of forget and retain items with
        ``vectors`` intervened on (none: the unmodified model)."""
        hooks = intervention_hooks(self.model, vectors, mode, sigma=sigma, seed=seed)
        batch = self.settings.batch_size
        with torch.no_grad(), self.model.bridge.hooks(fwd_hooks=hooks):
            logprobs = sequence_logprobs(self.model, self.prompts, self.answers, batch_size=batch)
            texts = (
                generate(
                    self.model,
                    self.prompts,
                    max_new_tokens=self.settings.max_new_tokens,
                    batch_size=batch,
                )
                if greedy
                else None
            )
        sums = np.array([lp.sum() for lp in logprobs])
        split = self.n_forget
        out: dict[str, float | None] = {
            "forget_logprob": _round(sums[:split].mean()),
            "retain_logprob": _round(sums[split:].mean()),
            "forget_accuracy": None,
            "retain_accuracy": None,
        }
        if texts is not None:
            correct = np.array([alias_match(t, a) for t, a in zip(texts, self.accepted)])
            out["forget_accuracy"] = _round(correct[:split].mean())
            out["retain_accuracy"] = _round(correct[split:].mean())
        return out


def validate(
    model: Model,
    target: Target,
    settings: ValidateSettings = ValidateSettings(),
    located: LocateResult | None = None,
) -> ValidateResult:
    """Test the top located vectors causally against random ones (see module docstring).
    ``located`` defaults to `locate` with ``settings.locate``; it must come from this model."""
    located = located or locate(model, target, settings.locate)
    if located.model["content_hash"] != model.content_hash:
        raise ConceptVectorError(
            f"the located vectors come from model {located.model['name']} "
            f"({located.model['content_hash']}), not {model.name} ({model.content_hash}); "
            "locate them on the model you validate"
        )
    chosen = located.candidates[: settings.n_candidates]
    if not chosen:
        raise ConceptVectorError(
            f"no located vector to validate for target {target.name!r}: no value vector's top "
            f"tokens hold {located.settings['min_words']} concept words; lower min_words or give "
            "the target more specific keywords and answers"
        )
    scorer = InterventionScorer(model, target, settings.scoring)
    rng = np.random.default_rng(settings.seed)
    refs = [(c["layer"], c["index"]) for c in chosen]
    layers = [layer for layer, _ in refs]
    excluded = located.vectors()
    randoms = random_vectors(layers, model.d_mlp, settings.n_random, rng, excluded)
    n_single = 1 + len(refs) + len(randoms)
    log.info(
        "validating %d candidates against %d random vectors (%s): %d scorings, then %d for the "
        "set ablation",
        len(refs),
        len(randoms),
        settings.mode,
        n_single,
        1 + settings.n_random_sets,
    )

    done = iter(range(1, n_single + settings.n_random_sets + 2))

    def run(vectors: Sequence[VectorRef], greedy: bool) -> dict[str, float | None]:
        measured = scorer.measure(vectors, settings.mode, settings.sigma, settings.seed, greedy)
        log.info("scoring %d: %d vector(s) %s", next(done), len(vectors), measured)
        return measured

    baseline = run([], True)
    random_rows = [
        {"layer": ref[0], "index": ref[1], **_with_drops(run([ref], settings.greedy), baseline)}
        for ref in randoms
    ]
    measure = settings.criterion
    random_forget = np.array([r[f"forget_{measure}_drop"] for r in random_rows])
    random_retain = np.array([r[f"retain_{measure}_drop"] for r in random_rows])
    thresholds = {
        "measure": measure,
        "forget_drop": _round(np.percentile(random_forget, settings.percentile)),
        "retain_drop_max": _round(random_retain.max()),
    }
    candidate_rows = []
    for candidate, ref in zip(chosen, refs):
        row = _with_drops(run([ref], settings.greedy), baseline)
        forget, retain = row[f"forget_{measure}_drop"], row[f"retain_{measure}_drop"]
        validated = forget > thresholds["forget_drop"] and retain <= thresholds["retain_drop_max"]
        candidate_rows.append(
            {
                "layer": ref[0],
                "index": ref[1],
                "sign": candidate["sign"],
                "located_rank": candidate["rank"],
                "located_score": candidate["score"],
                "top_tokens": candidate["top_tokens"][:10],
                **row,
                "p_value": _round((1 + (random_forget >= forget).sum()) / (1 + len(random_rows))),
                "validated": bool(validated),
            }
        )
    validated_refs = [(r["layer"], r["index"]) for r in candidate_rows if r["validated"]]
    set_refs = validated_refs or refs
    set_ablation = _set_ablation(
        set_refs, run, baseline, rng, model.d_mlp, excluded, settings.n_random_sets
    )
    set_ablation["source"] = "validated" if validated_refs else "all candidates (none validated)"
    recorded = dataclasses.asdict(settings)
    recorded["scoring"]["prompt_style"] = scorer.style
    return ValidateResult(
        model=model.identity(),
        target=target.name,
        settings=recorded,
        criterion=CRITERION.format(
            measure=measure, percentile=settings.percentile, unit=UNITS[measure]
        ),
        n_forget=scorer.n_forget,
        n_retain=len(scorer.prompts) - scorer.n_forget,
        n_interventions=n_single + 1 + settings.n_random_sets,
        baseline=baseline,
        candidates=candidate_rows,
        random=random_rows,
        thresholds=thresholds,
        n_validated=len(validated_refs),
        expected_false_positives=_round(len(refs) * (1 - settings.percentile / 100)),
        set_ablation=set_ablation,
    )


def _set_ablation(
    refs: Sequence[VectorRef],
    run,
    baseline: dict[str, float | None],
    rng: np.random.Generator,
    d_mlp: int,
    excluded: Sequence[VectorRef],
    n_sets: int,
) -> dict[str, Any]:
    """The chosen set against ``n_sets`` layer-matched random sets, all with greedy accuracy."""
    layers = [layer for layer, _ in refs]
    chosen = _with_drops(run(refs, True), baseline)
    random_sets = []
    for _ in range(n_sets):
        draw = random_vectors(layers, d_mlp, len(refs), rng, excluded)
        random_sets.append(
            {"vectors": [list(v) for v in draw], **_with_drops(run(draw, True), baseline)}
        )
    drops = [f"{m}_drop" for m in MEASURES]
    return {
        "vectors": [list(v) for v in refs],
        "chosen": chosen,
        "random": random_sets,
        "random_mean": {k: _round(np.mean([r[k] for r in random_sets])) for k in drops},
    }


def _with_drops(
    measured: dict[str, float | None], baseline: dict[str, float | None]
) -> dict[str, float | None]:
    """The measures plus ``<measure>_drop`` = baseline - measured (None without greedy)."""
    drops = {
        f"{m}_drop": None if measured[m] is None else _round(baseline[m] - measured[m])
        for m in MEASURES
    }
    return {**measured, **drops}


def _round(value: float) -> float:
    return round(float(value), 6)
