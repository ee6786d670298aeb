"""Validate located concept vectors causally: intervene on each (through hooks, the model's
weights untouched) and compare the damage with the same intervention on random value vectors.

Measures, over the target's forget and retain QA items (prompted as in `remnant.scoring`):
mean answer log-probability (nats, summed over answer tokens, mean over items) and greedy
accuracy (alias match, ``max_new_tokens`` new tokens). A *drop* is baseline minus
intervened (positive = the intervention hurt).

Cost: the log-probability of every intervention is measured in batched forward passes that
hold ``interventions_per_batch`` interventions at once, each row under its own intervention
only (`interventions.grouped_hooks`: the same numbers as one intervention per pass). Greedy
accuracy takes one generation over all items per intervention, so it is measured where it is
read: the baseline, the candidates and the set ablation; for the random vectors only under the
``accuracy`` criterion (or with ``random_accuracy``), else their accuracy fields are None.

Criterion: a candidate is *validated* when its forget drop exceeds the ``percentile`` (95th)
of the random vectors' forget drops and its retain drop does not exceed the largest random
retain drop, both in the ``criterion`` measure: ``logprob`` (default; continuous, and needs no
generation for the random vectors) or ``accuracy`` (greedy accuracy: what a user sees, but over
a few dozen items it moves in steps of one item, so many random draws tie). The candidates'
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
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from remnant.concept_vectors import locate
from remnant.concept_vectors.interventions import (
    INTERVENTION_CONSTRAINTS,
    Hook,
    Mode,
    grouped_hooks,
    intervention_hooks,
    require_noise_sigma,
)
from remnant.concept_vectors.locate import LocateResult, LocateSettings
from remnant.concept_vectors.vectors import VectorRef, random_vectors
from remnant.errors import ConceptVectorError
from remnant.models.model import Model
from remnant.models.resume import ResumedBatch
from remnant.results import Result
from remnant.scoring import (
    ScoringSettings,
    encode_answers,
    encode_prompts,
    format_prompt,
    generate,
    is_correct,
    resolve_style,
)
from remnant.scoring.batching import SharedPrefix, ending_logprobs, length_batches
from remnant.scoring.statistics import rounded
from remnant.settings import Constraint, InstanceOf, Interval, OneOf
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
    fields prompt and batch the items (64 rows per forward pass and 16 new tokens by default),
    and ``seed`` fixes every random draw (random vectors, random sets, noise)."""

    constraints: ClassVar[Mapping[str, Constraint]] = {
        **INTERVENTION_CONSTRAINTS,
        "n_candidates": Interval(int, 1),
        "n_random": Interval(int, 20),
        "criterion": OneOf(tuple(UNITS)),
        "percentile": Interval(float, 0, 100, open_low=True, open_high=True),
        "random_accuracy": InstanceOf(bool),
        "interventions_per_batch": Interval(int, 1),
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
    n_random: int = 100
    """Random value vectors as the reference; at least 20 (a percentile of fewer draws is
    noise: the 95th of 20 is the 19th value)."""
    criterion: Literal["logprob", "accuracy"] = "logprob"
    """The measure a candidate's drops are judged in (see the module docstring)."""
    percentile: float = 95.0
    """Percentile of the random vectors' forget drops a candidate's must exceed, in (0, 100)."""
    random_accuracy: bool = False
    """Also measure greedy accuracy under every random vector when the criterion is
    ``logprob`` (one generation per draw, the costliest part); the ``accuracy`` criterion
    always measures it. The baseline, candidates and set ablation always get it."""
    interventions_per_batch: int = 8
    """Interventions whose log-probabilities share one forward pass (at most ``batch_size``):
    each pass holds ``batch_size`` rows, ``batch_size // interventions_per_batch`` items of
    similar length under each intervention (less padding than all items at once); 1: one
    intervention per pass."""
    n_random_sets: int = 5
    """Random sets the set ablation is compared with."""
    locate: LocateSettings = LocateSettings()
    """How the candidates are located when `run` is given none."""

    def check(self) -> None:
        require_noise_sigma(self.mode, self.sigma)

    @property
    def greedy_random(self) -> bool:
        """Whether the random vectors get greedy accuracy: asked for, or the criterion's."""
        return self.random_accuracy or self.criterion == "accuracy"


@dataclasses.dataclass(frozen=True)
class ValidateResult(Result):
    """Causal validation of located vectors (see the module docstring for the measures and the
    criterion)."""

    kind = "validate"
    schema_version = 2

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
    """Interventions measured (log-probabilities of every one): the baseline (none), one per
    candidate and random vector, the chosen set and each random set."""
    baseline: dict[str, float | None]
    """The four measures without intervention: ``forget_logprob`` and ``retain_logprob``
    (nats: mean over items of the summed answer log-probability), ``forget_accuracy`` and
    ``retain_accuracy`` (greedy, alias match)."""
    candidates: list[dict[str, Any]]
    """Per tested candidate: layer, index, sign, located rank and score, top tokens, the four
    measures under intervention and their drops (``*_drop`` = baseline - intervened),
    ``p_value`` ((1 + random draws whose forget drop in the criterion measure is at least as
    large) / (1 + n_random)) and ``validated``."""
    random: list[dict[str, Any]]
    """Per random reference vector: layer, index, the four measures and their drops; the
    accuracy ones None unless the criterion is ``accuracy`` or ``random_accuracy`` was on."""
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
    """Scores the forget and retain items under interventions (each a list of value vectors,
    intervened on as ``settings`` say); prompts are encoded once."""

    def __init__(self, model: Model, target: Target, settings: ValidateSettings) -> None:
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

    def measure_many(
        self, interventions: Sequence[Sequence[VectorRef]], greedy: bool | Sequence[bool]
    ) -> list[dict[str, float | None]]:
        """The four measures under each intervention (an empty one: the unmodified model):
        mean answer log-prob (nats) of the forget and retain items, from batched passes of
        ``interventions_per_batch`` interventions, and their greedy accuracy, from one
        generation per intervention where ``greedy`` (one flag, or one per intervention) says
        so, else None."""
        flags = [greedy] * len(interventions) if isinstance(greedy, bool) else list(greedy)
        no_accuracy = {"forget_accuracy": None, "retain_accuracy": None}
        return [
            {**logprobs, **(self.accuracy(vectors) if flag else no_accuracy)}
            for vectors, logprobs, flag in zip(interventions, self.logprobs(interventions), flags)
        ]

    def logprobs(self, interventions: Sequence[Sequence[VectorRef]]) -> list[dict[str, float]]:
        """Mean answer log-prob (nats) of the forget and retain items under each intervention.

        The items run unmodified once per batch (`ResumedBatch`); each intervention is then
        computed from the first block it changes, ``interventions_per_batch`` of them per
        resumed pass (sorted by that block, rows grouped by intervention: `grouped_hooks`), the
        prompts' shared prefix (the chat template's system turn) once per intervention."""
        model, n_layers = self.model, self.model.n_layers
        per_pass = min(self.settings.interventions_per_batch, self.settings.batch_size)
        starts = [
            min((layer for layer, _ in vectors), default=n_layers) for vectors in interventions
        ]
        order = sorted(range(len(interventions)), key=starts.__getitem__)
        chunks = [order[first : first + per_pass] for first in range(0, len(order), per_pass)]
        hooks = [grouped_hooks([self._hooks(interventions[j]) for j in chunk]) for chunk in chunks]
        sums = np.zeros((len(interventions), len(self.prompts)))
        lengths = [len(p) + len(a) for p, a in zip(self.prompts, self.answers)]
        prefix = SharedPrefix(model, self.prompts)
        done = 0
        for items in length_batches(lengths, max(1, self.settings.batch_size // per_pass)):
            answers = [len(self.answers[i]) for i in items]
            ids, mask = prefix.padded(
                [list(self.prompts[i]) + list(self.answers[i]) for i in items]
            )
            batch = ResumedBatch(
                model, ids, mask, [starts[c[0]] for c in chunks], 1 + max(answers), prefix.cache
            )
            for chunk, chunk_hooks in zip(chunks, hooks):
                with model.bridge.hooks(fwd_hooks=chunk_hooks):
                    logits = batch.resume(starts[chunk[0]], len(chunk))
                rows = ending_logprobs(logits, ids.repeat(len(chunk), 1), answers * len(chunk))
                for g, j in enumerate(chunk):
                    sums[j, items] = [
                        lp.sum() for lp in rows[g * len(items) : (g + 1) * len(items)]
                    ]
            done += len(items)
            log.info("log-probs under every intervention: %d of %d items", done, len(lengths))
        return [
            {
                "forget_logprob": rounded(row[: self.n_forget].mean()),
                "retain_logprob": rounded(row[self.n_forget :].mean()),
            }
            for row in sums
        ]

    def accuracy(self, vectors: Sequence[VectorRef]) -> dict[str, float]:
        """Greedy accuracy (alias match) of the forget and retain items with ``vectors``
        intervened on: one generation over all items."""
        with torch.no_grad(), self.model.bridge.hooks(fwd_hooks=self._hooks(vectors)):
            texts = generate(
                self.model,
                self.prompts,
                max_new_tokens=self.settings.max_new_tokens,
                batch_size=self.settings.batch_size,
            )
        correct = np.array([is_correct(item, t) for item, t in zip(self.items, texts)])
        log.info("greedy accuracy under %d vector(s)", len(vectors))
        return {
            "forget_accuracy": rounded(correct[: self.n_forget].mean()),
            "retain_accuracy": rounded(correct[self.n_forget :].mean()),
        }

    def _hooks(self, vectors: Sequence[VectorRef]) -> list[Hook]:
        settings = self.settings
        return intervention_hooks(
            self.model, vectors, settings.mode, sigma=settings.sigma, seed=settings.seed
        )


def run(
    model: Model,
    target: Target,
    settings: ValidateSettings = ValidateSettings(),
    *,
    located: LocateResult | None = None,
) -> ValidateResult:
    """Test the top located vectors causally against random ones (see module docstring), on
    the items the ranking did not read (`unread`). ``located`` defaults to `locate.run` with
    ``settings.locate``; it must come from this model."""
    located = located or locate.run(
        model, target, settings.locate, prompt_style=settings.prompt_style
    )
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
    scorer = InterventionScorer(model, unread(target, located), settings)
    rng = np.random.default_rng(settings.seed)
    refs = [(c["layer"], c["index"]) for c in chosen]
    layers = [layer for layer, _ in refs]
    excluded = located.vectors()
    randoms = random_vectors(layers, model.d_mlp, settings.n_random, rng, excluded)
    n_single = 1 + len(refs) + len(randoms)
    log.info(
        "validating %d candidates against %d random vectors (%s): log-probs under %d "
        "interventions, %d per pass, greedy accuracy under %d; then both under %d for the set "
        "ablation",
        len(refs),
        len(randoms),
        settings.mode,
        n_single,
        min(settings.interventions_per_batch, settings.batch_size),
        1 + len(refs) + (len(randoms) if settings.greedy_random else 0),
        1 + settings.n_random_sets,
    )
    greedy = [True] * (1 + len(refs)) + [settings.greedy_random] * len(randoms)
    baseline, *measured = scorer.measure_many([[], *([ref] for ref in refs + randoms)], greedy)
    random_rows = [
        {"layer": ref[0], "index": ref[1], **_with_drops(row, baseline)}
        for ref, row in zip(randoms, measured[len(refs) :])
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
    for candidate, ref, measures in zip(chosen, refs, measured):
        row = _with_drops(measures, baseline)
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
        set_refs, scorer, baseline, rng, model.d_mlp, excluded, settings.n_random_sets
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


def unread(target: Target, located: LocateResult) -> Target:
    """``target`` without the items whose answers ranked the located vectors
    (``located.fitted_on``), so that validation judges the ranking on items it did not read."""
    if not located.fitted_on:
        return target
    read = set(located.fitted_on)
    return target.model_copy(
        update={
            "forget": [i for i in target.forget if i.question not in read],
            "retain": [i for i in target.retain if i.question not in read],
        }
    )


def _set_ablation(
    refs: Sequence[VectorRef],
    scorer: InterventionScorer,
    baseline: dict[str, float | None],
    rng: np.random.Generator,
    d_mlp: int,
    excluded: Sequence[VectorRef],
    n_sets: int,
) -> dict[str, Any]:
    """The chosen set against ``n_sets`` layer-matched random sets, all with greedy accuracy."""
    layers = [layer for layer, _ in refs]
    draws = [random_vectors(layers, d_mlp, len(refs), rng, excluded) for _ in range(n_sets)]
    chosen, *measured = (
        _with_drops(row, baseline) for row in scorer.measure_many([refs, *draws], greedy=True)
    )
    random_sets = [{"vectors": [list(v) for v in d], **row} for d, row in zip(draws, measured)]
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
    """The measures plus ``<measure>_drop`` = baseline - measured (None where not measured)."""
    drops = {
        f"{m}_drop": None if measured[m] is None else rounded(baseline[m] - measured[m])
        for m in MEASURES
    }
    return {**measured, **drops}
