"""Validate located concept vectors causally: intervene on each (through hooks, the model's
weights untouched) and compare the damage with the same intervention on random value vectors.

Measures, over the target's forget and retain QA items (prompted as in `remnant.scoring`):
mean answer log-probability (nats, summed over answer tokens, mean over items) and greedy
accuracy (alias match, ``max_new_tokens`` new tokens). A *drop* is baseline minus
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from remnant.concept_vectors import locate
from remnant.concept_vectors.interventions import (
    INTERVENTION_CONSTRAINTS,
    Mode,
    intervention_hooks,
    require_noise_sigma,
)
from remnant.concept_vectors.locate import LocateResult, LocateSettings
from remnant.concept_vectors.vectors import VectorRef, random_vectors
from remnant.errors import ConceptVectorError
from remnant.models.model import Model
from remnant.results import Result
from remnant.scoring import (
    ScoringSettings,
    encode_answers,
    encode_prompts,
    format_prompt,
    generate,
    is_correct,
    resolve_style,
    sequence_logprobs,
)
from remnant.scoring.statistics import rounded
from remnant.settings import Constraint, InstanceOf, Interval, OneOf, require
from remnant.targets.model import Target

log = logging.getLogger(__name__)

CRITERION = (
    "validated = forget {measure} drop > {percentile:g}th percentile of the random vectors' "
    "forget {measure} drops AND retain {measure} drop <= the largest random retain {measure} "
    "drop (drops are baseline minus intervened; {unit})"
)
UNITS = {
    "logprob": "log-prob in nats: mean over items of the summed answer log-probability",
    "accuracy": "greedy accuracy: fraction of items whose generation states the answer "
    "(`remnant.scoring.is_correct`)",
}
MEASURES = ("forget_logprob", "retain_logprob", "forget_accuracy", "retain_accuracy")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidateSettings(ScoringSettings):
    """Which located vectors are tested, how, against what, and by which criterion; the scoring
    fields prompt and batch the items (64 prompts per batch and 16 new tokens by default), and
    ``seed`` fixes every random draw (random vectors, random sets, noise)."""

    constraints: ClassVar[Mapping[str, Constraint]] = {
        **INTERVENTION_CONSTRAINTS,
        "n_candidates": Interval(int, 1),
        "n_random": Interval(int, 20),
        "criterion": OneOf(tuple(UNITS)),
        "percentile": Interval(float, 0, 100, open_low=True, open_high=True),
        "greedy": InstanceOf(bool),
        "n_random_sets": Interval(int, 1),
        "locate": InstanceOf(LocateSettings),
    }

    batch_size: int = 64
    max_new_tokens: int = 16
    n_candidates: int = 10
    """How many top located vectors are tested."""
    mode: Mode = "zero"
    """The intervention (`remnant.concept_vectors.interventions`): zero, noise or project."""
    sigma: float = 0.1
    """Noise standard deviation (mode ``noise``; weight units)."""
    n_random: int = 20
    """Random value vectors as the reference; at least 20 (a percentile of fewer draws is
    noise)."""
    criterion: Literal["logprob", "accuracy"] = "logprob"
    """The measure a candidate's drops are judged in (see the module docstring)."""
    percentile: float = 95.0
    """Percentile of the random vectors' forget drops a candidate's must exceed, in (0, 100)."""
    greedy: bool = True
    """Also score greedy accuracy per vector (costly: a generation per vector; the accuracy
    criterion needs it)."""
    n_random_sets: int = 5
    """Random sets the set ablation is compared with."""
    locate: LocateSettings = LocateSettings()
    """How the candidates are located when `run` is given none."""

    def check(self) -> None:
        require_noise_sigma(self.mode, self.sigma)
        require(
            self.criterion != "accuracy" or self.greedy, "the accuracy criterion needs greedy=True"
        )


@dataclasses.dataclass(frozen=True)
class ValidateResult(Result):
    """Causal validation of located vectors (see the module docstring for the measures and the
    criterion)."""

    kind = "validate"

    model: dict[str, Any]
    """Identity of the model the vectors were located on and intervened in."""
    target: str
    """Name of the target."""
    settings: dict[str, Any]
    """The `ValidateSettings` used (prompt style resolved)."""
    criterion: str
    """The validation criterion, in words, with its measure's unit."""
    n_forget: int
    """Forget QA items scored."""
    n_retain: int
    """Retain QA items scored."""
    n_interventions: int
    """Scorings made: the baseline, one per random and candidate vector, the chosen set and
    each random set."""
    baseline: dict[str, float | None]
    """The four measures without intervention: ``forget_logprob`` and ``retain_logprob``
    (nats: mean over items of the summed answer log-probability), ``forget_accuracy`` and
    ``retain_accuracy`` (greedy, alias match)."""
    candidates: list[dict[str, Any]]
    """Per tested candidate: layer, index, sign, located rank and score, top tokens, the four
    measures under intervention and their drops (``*_drop`` = baseline - intervened; accuracy
    ones None when ``greedy`` is off), ``p_value`` ((1 + random draws whose forget drop in the
    criterion measure is at least as large) / (1 + n_random)) and ``validated``."""
    random: list[dict[str, Any]]
    """Per random reference vector: layer, index, the measures and their drops."""
    thresholds: dict[str, Any]
    """The criterion's ``measure`` and cut-offs: ``forget_drop`` (the percentile of the random
    forget drops) and ``retain_drop_max`` (the largest random retain drop)."""
    n_validated: int
    """Candidates that meet the criterion."""
    expected_false_positives: float
    """Candidates expected to pass by chance: n_candidates x (1 - percentile / 100)."""
    set_ablation: dict[str, Any]
    """All validated vectors at once (all candidates if none validated: ``source`` says which):
    the ``vectors``, their measures and drops (``chosen``), each layer-matched random set's
    (``random``) and the random sets' mean drops (``random_mean``); all with greedy accuracy."""

    def summary(self) -> dict[str, Any]:
        """Validated and tested candidates, and the set ablation's drops beside the random
        sets' mean drops."""
        together = self.set_ablation
        drops = [f"{m}_drop" for m in MEASURES]
        return {
            "n_validated": self.n_validated,
            "n_candidates": len(self.candidates),
            "measure": self.thresholds["measure"],
            "set_ablation": {
                "source": together["source"],
                "n_vectors": len(together["vectors"]),
                "chosen": {k: together["chosen"][k] for k in drops},
                "random_mean": together["random_mean"],
            },
        }

    def comparison_vectors(self) -> tuple[list[VectorRef], list[int]]:
        """The vectors to compare with an unlearned model and their signs: the validated
        candidates, or every tested candidate when none validated (as the set ablation does)."""
        chosen = [c for c in self.candidates if c["validated"]] or self.candidates
        return [(c["layer"], c["index"]) for c in chosen], [c["sign"] for c in chosen]


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
        self.items = items
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
            "forget_logprob": rounded(sums[:split].mean()),
            "retain_logprob": rounded(sums[split:].mean()),
            "forget_accuracy": None,
            "retain_accuracy": None,
        }
        if texts is not None:
            correct = np.array([is_correct(item, t) for item, t in zip(self.items, texts)])
            out["forget_accuracy"] = rounded(correct[:split].mean())
            out["retain_accuracy"] = rounded(correct[split:].mean())
        return out


def run(
    model: Model,
    target: Target,
    settings: ValidateSettings = ValidateSettings(),
    *,
    located: LocateResult | None = None,
) -> ValidateResult:
    """Test the top located vectors causally against random ones (see module docstring).
    ``located`` defaults to `locate.run` with ``settings.locate``; it must come from this
    model."""
    located = located or locate.run(model, target, settings.locate)
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
    scorer = InterventionScorer(model, target, settings)
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

    def score(vectors: Sequence[VectorRef], greedy: bool) -> dict[str, float | None]:
        measured = scorer.measure(vectors, settings.mode, settings.sigma, settings.seed, greedy)
        log.info("scoring %d: %d vector(s) %s", next(done), len(vectors), measured)
        return measured

    baseline = score([], True)
    random_rows = [
        {"layer": ref[0], "index": ref[1], **_with_drops(score([ref], settings.greedy), baseline)}
        for ref in randoms
    ]
    measure = settings.criterion
    random_forget = np.array([r[f"forget_{measure}_drop"] for r in random_rows])
    random_retain = np.array([r[f"retain_{measure}_drop"] for r in random_rows])
    thresholds = {
        "measure": measure,
        "forget_drop": rounded(np.percentile(random_forget, settings.percentile)),
        "retain_drop_max": rounded(random_retain.max()),
    }
    candidate_rows = []
    for candidate, ref in zip(chosen, refs):
        row = _with_drops(score([ref], settings.greedy), baseline)
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
                "p_value": rounded((1 + (random_forget >= forget).sum()) / (1 + len(random_rows))),
                "validated": bool(validated),
            }
        )
    validated_refs = [(r["layer"], r["index"]) for r in candidate_rows if r["validated"]]
    set_refs = validated_refs or refs
    set_ablation = _set_ablation(
        set_refs, score, baseline, rng, model.d_mlp, excluded, settings.n_random_sets
    )
    set_ablation["source"] = "validated" if validated_refs else "all candidates (none validated)"
    return ValidateResult(
        model=model.identity(),
        target=target.name,
        settings=settings.record(prompt_style=scorer.style),
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
        expected_false_positives=rounded(len(refs) * (1 - settings.percentile / 100)),
        set_ablation=set_ablation,
    )


def _set_ablation(
    refs: Sequence[VectorRef],
    score: Callable[[Sequence[VectorRef], bool], dict[str, float | None]],
    baseline: dict[str, float | None],
    rng: np.random.Generator,
    d_mlp: int,
    excluded: Sequence[VectorRef],
    n_sets: int,
) -> dict[str, Any]:
    """The chosen set against ``n_sets`` layer-matched random sets, all with greedy accuracy."""
    layers = [layer for layer, _ in refs]
    chosen = _with_drops(score(refs, True), baseline)
    random_sets = []
    for _ in range(n_sets):
        draw = random_vectors(layers, d_mlp, len(refs), rng, excluded)
        random_sets.append(
            {"vectors": [list(v) for v in draw], **_with_drops(score(draw, True), baseline)}
        )
    drops = [f"{m}_drop" for m in MEASURES]
    return {
        "vectors": [list(v) for v in refs],
        "chosen": chosen,
        "random": random_sets,
        "random_mean": {k: rounded(np.mean([r[k] for r in random_sets])) for k in drops},
    }


def _with_drops(
    measured: dict[str, float | None], baseline: dict[str, float | None]
) -> dict[str, float | None]:
    """The measures plus ``<measure>_drop`` = baseline - measured (None without greedy)."""
    drops = {
        f"{m}_drop": None if measured[m] is None else rounded(baseline[m] - measured[m])
        for m in MEASURES
    }
    return {**measured, **drops}
