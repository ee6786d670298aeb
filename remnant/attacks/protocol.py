"""The attack protocol: a seeded fit / held-out split of the forget items grouped by entity,
conditions scored by greedy generation on every model (unlearned, original, gold), and gap
recovery with a bootstrap CI.

An attack builds `Condition`s (prompts for held-out items) and hands them to `run_conditions`,
which scores each condition on each model and derives per condition the accuracy over all items
and over answered items (each with a 95% bootstrap CI) and the *gap recovery*

    (attacked unlearned − plain unlearned) / (plain original − plain unlearned),

the part of the accuracy that unlearning removed which the attack brings back, where *plain* is
the `BASELINE` condition (each item's own question, asked plainly) on the same items. Gap
recovery is undefined (None, with the reason) when the 95% CI of its denominator includes 0:
unlearning removed no measurable accuracy from these items, and any ratio would be noise.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from remnant.errors import TargetError
from remnant.models.cache import Memo, cache_key
from remnant.models.compat import check_compatible
from remnant.models.model import Model
from remnant.progress import progress_bar
from remnant.results import Result
from remnant.scoring import (
    EmbeddingEdit,
    Style,
    accuracy_summary,
    alias_match,
    encode_prompts,
    format_prompt,
    generate,
    is_correct,
    normalize,
    resolve_style,
    rouge_l_recall,
    rounded,
)
from remnant.scoring.statistics import cluster_resamples
from remnant.settings import Interval, ScoringSettings
from remnant.targets.model import QAItem, Target

T = TypeVar("T")

#: The name of the condition that asks each held-out item's own question with no attack.
BASELINE = "plain"

#: Model roles, in the order results list them.
ROLES = ("original", "unlearned", "gold")

Judge = Callable[[QAItem, str], bool]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackSettings(ScoringSettings):
    """The fit / held-out split, greedy decoding (RWKU generates 30 new tokens) and scoring."""

    constraints = {"held_out_fraction": Interval(float, 0, 1, open_low=True, open_high=True)}

    max_new_tokens: int = 30
    held_out_fraction: float = 0.5
    """Least fraction of the forget items in the held-out split (whole entity groups are moved,
    so it may hold more)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Forget items split into a fit part (what an attack may show the model) and a disjoint
    held-out part (what it is scored on); items of one entity group share a side."""

    fit: tuple[QAItem, ...]
    held_out: tuple[QAItem, ...]
    n_groups: int
    seed: int

    def record(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "n_groups": self.n_groups,
            "fit": [item.question for item in self.fit],
            "held_out": [item.question for item in self.held_out],
        }


def entity_groups(target: Target, items: Sequence[QAItem]) -> list[int]:
    """Per item, the index of its entity group: items are linked when they name the same
    subject (`Target.subject_of`; only when the items name more than one subject), when they
    share an accepted answer (paraphrases; only when they all name one subject, as in a target
    about a single concept), or when one's accepted answer occurs in the other's question
    (asking one gives the other away). Groups are the connected components of these links."""
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def link(i: int, j: int) -> None:
        parent[root(i)] = root(j)

    subjects = [normalize(target.subject_of(item) or "") for item in items]
    by_subject = len(set(subjects)) > 1
    answers = [{normalize(a) for a in item.accepted_answers} - {""} for item in items]
    for i, first in enumerate(items):
        for j in range(i + 1, len(items)):
            second = items[j]
            same_subject = by_subject and bool(subjects[i]) and subjects[i] == subjects[j]
            paraphrase = not by_subject and bool(answers[i] & answers[j])
            gives_away = alias_match(first.question, second.accepted_answers) or alias_match(
                second.question, first.accepted_answers
            )
            if same_subject or paraphrase or gives_away:
                link(i, j)
    roots = [root(i) for i in range(len(items))]
    index = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return [index[r] for r in roots]


def split_forget(target: Target, held_out_fraction: float = 0.5, seed: int = 0) -> Split:
    """A seeded split of ``target``'s forget items: whole entity groups (`entity_groups`) go to
    the held-out side, in a seeded random order, until it holds at least ``held_out_fraction``
    of the items; the rest is the fit side. Both sides are never empty."""
    items = target.forget
    groups = entity_groups(target, items)
    n_groups = max(groups, default=-1) + 1
    if n_groups < 2:
        raise TargetError(
            f"target {target.name!r} has {len(items)} forget item(s) in {n_groups} entity "
            "group(s): an attack needs at least two groups, one to show the model and one to "
            "score it on (items naming one subject are grouped by shared answers)"
        )
    order = list(range(n_groups))
    random.Random(seed).shuffle(order)
    wanted = held_out_fraction * len(items)
    held: set[int] = set()
    for group in order[:-1]:  # the last group always stays on the fit side
        if sum(g in held for g in groups) >= wanted:
            break
        held.add(group)
    return Split(
        fit=tuple(item for item, g in zip(items, groups) if g not in held),
        held_out=tuple(item for item, g in zip(items, groups) if g in held),
        n_groups=n_groups,
        seed=seed,
    )


def without_answer(item: QAItem, texts: Sequence[str]) -> list[str]:
    """The ``texts`` that do not give ``item``'s answer away (`remnant.scoring.is_correct` on
    the text): context an attack may put before the item's question."""
    return [text for text in texts if not is_correct(item, text)]


@dataclasses.dataclass(frozen=True)
class Condition:
    """One way of asking: per scored item, the dialogue to prompt with.

    ``items`` are what is scored (their answers judge the generations); ``bases`` name, per
    item, the question of the held-out item whose plain accuracy it is compared with (the item
    itself, or the item a variant was made from). ``prompts`` are formatted text (built with
    `remnant.scoring.format_dialogue` for the original model; the models share a chat template).
    ``chance`` is the accuracy of guessing (1 / choices for multiple choice, else 0); ``notes``
    records what the attack did (dropped passages, capped demonstrations, ...)."""

    name: str
    category: str
    items: tuple[QAItem, ...]
    bases: tuple[str, ...]
    prompts: tuple[str, ...]
    judge: Judge = is_correct
    chance: float = 0.0
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.items) == len(self.bases) == len(self.prompts):
            raise ValueError(f"condition {self.name!r}: items, bases and prompts differ in length")


def plain_condition(model: Model, items: Sequence[QAItem], style: Style) -> Condition:
    """The `BASELINE`: each item's own question, asked with no attack."""
    return Condition(
        name=BASELINE,
        category=BASELINE,
        items=tuple(items),
        bases=tuple(item.question for item in items),
        prompts=tuple(format_prompt(model, item.question, style) for item in items),
    )


@dataclasses.dataclass(frozen=True)
class AttackResult(Result):
    """What an attack recovered: per condition, accuracy of every model on the held-out items
    (with the prompts and generations), and the gap recovery of the unlearned model."""

    kind = "attack"

    attack: str
    """The attack's name (``in_context``, ``reasoning``, ``variants``)."""
    models: dict[str, dict[str, Any]]
    """Identity of each model by role: ``original``, ``unlearned`` and, when given, ``gold``
    (a model that never saw the forget data)."""
    target: str
    """The target's name."""
    settings: dict[str, Any]
    """The attack's settings, with the prompt style resolved."""
    split: dict[str, Any]
    """The fit / held-out split: ``seed``, ``n_groups`` (entity groups), and the questions of
    the ``fit`` and ``held_out`` items."""
    conditions: list[dict[str, Any]]
    """Per condition: ``name``, ``category``, ``chance`` (accuracy of guessing), ``notes``, and
    ``scores[role]``: ``n``, ``accuracy`` and ``ci``, ``n_answered``, ``answered_accuracy``
    and ``answered_ci`` (95% bootstrap CIs), and ``items`` (per item: ``question``, ``answer``,
    ``base``, ``prompt``, ``generation``, ``correct``, ``answered``, ``rouge_l_recall``); and
    ``gap_recovery`` (see `gap_recovery`). The first condition is the `BASELINE`."""
    seconds: dict[str, float]
    """Wall time of the generations, by model role."""

    def summary(self) -> list[dict[str, Any]]:
        """Per condition: name, category, n, each model's accuracy and CI, and gap recovery."""
        rows = []
        for condition in self.conditions:
            row: dict[str, Any] = {
                "condition": condition["name"],
                "category": condition["category"],
                "n": condition["scores"]["unlearned"]["n"],
                "chance": condition["chance"],
            }
            for role, scores in condition["scores"].items():
                row[role] = {"accuracy": scores["accuracy"], "ci": scores["ci"]}
            row["gap_recovery"] = condition["gap_recovery"]
            rows.append(row)
        return rows


def attack_models(
    original: Model, unlearned: Model, gold: Model | None, purpose: str
) -> dict[str, Model]:
    """The models by role (gold only when given), checked to share tokenizer and template."""
    models = {"original": original, "unlearned": unlearned}
    if gold is not None:
        models["gold"] = gold
    for other in list(models.values())[1:]:
        check_compatible(original, other, purpose)
    return models


#: The attacks' work on one model at a time, kept in this process (`model_work`).
MODEL_WORK: Memo[Any] = Memo(size=32)


def model_work(
    attack: str,
    model: Model,
    original: Model,
    target: Target,
    settings: AttackSettings,
    compute: Callable[[], T],
    **inputs: Any,
) -> T:
    """``compute()``, the attack's work on ``model`` alone, kept in memory by the attack, the
    content hashes of ``model`` and ``original`` (whose tokenizer encodes the inputs), the
    target, the settings and the other ``inputs``: an audit does it once for its original and
    gold models, not once for every model it compares with them."""
    key = cache_key(
        attack=attack,
        model=model.content_hash,
        original=original.content_hash,
        target=target.model_dump(mode="json"),
        settings=settings.record(),
        inputs=inputs,
    )
    return MODEL_WORK.get(key, compute)


def run_conditions(
    attack: str,
    models: dict[str, Model],
    target: Target,
    settings: AttackSettings,
    split: Split,
    conditions: Sequence[Condition],
    *,
    progress: bool = False,
) -> AttackResult:
    """Score every condition on every model by greedy generation (all conditions' prompts in
    one call per model); the first condition must be the `BASELINE` on the held-out items.
    Returns the `AttackResult`. The original's and the gold model's generations are kept
    (`remnant.scoring.generate`): they answer once for all the models an audit compares with
    them."""
    if not conditions or conditions[0].name != BASELINE:
        raise ValueError(f"the first condition must be {BASELINE!r}")
    original = models["original"]
    style = resolve_style(original, settings.prompt_style)
    scored: list[dict[str, Any]] = [
        {
            "name": c.name,
            "category": c.category,
            "chance": rounded(c.chance),
            "notes": c.notes,
            "scores": {},
        }
        for c in conditions
    ]
    seconds = dict.fromkeys(models, 0.0)
    bar = progress_bar(
        total=len(models) * sum(len(c.items) for c in conditions),
        desc=attack,
        unit="prompt",
        enabled=progress,
    )
    with bar:
        for role, model in models.items():
            started = time.perf_counter()
            for record, rows in zip(scored, condition_rows(model, conditions, style, settings)):
                bases = [row["base"] for row in rows]
                summary = accuracy_summary(rows, settings, clusters=bases)
                record["scores"][role] = {**summary, "items": rows}
            seconds[role] += time.perf_counter() - started
            bar.update(sum(len(c.items) for c in conditions))
    baseline = {
        role: {row["base"]: row["correct"] for row in scored[0]["scores"][role]["items"]}
        for role in ("original", "unlearned")
    }
    for record in scored:
        bases = [row["base"] for row in record["scores"]["unlearned"]["items"]]
        record["gap_recovery"] = gap_recovery(
            [row["correct"] for row in record["scores"]["unlearned"]["items"]],
            [baseline["unlearned"][b] for b in bases],
            [baseline["original"][b] for b in bases],
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
            clusters=bases,
        )
    return AttackResult(
        attack=attack,
        models={role: model.identity() for role, model in models.items()},
        target=target.name,
        settings=settings.record(prompt_style=style),
        split=split.record(),
        conditions=scored,
        seconds={role: round(s, 2) for role, s in seconds.items()},
    )


def score_plain(
    model: Model, items: Sequence[QAItem], style: Style, settings: AttackSettings
) -> dict[str, Any]:
    """``model``'s greedy answers to ``items`` asked plainly: the `accuracy_summary` with the
    per-item rows under ``items`` (white-box attacks score a changed model this way)."""
    return score_plain_splits(model, {"items": items}, style, settings)["items"]


def score_plain_splits(
    model: Model,
    splits: dict[str, Sequence[QAItem]],
    style: Style,
    settings: AttackSettings,
) -> dict[str, dict[str, Any]]:
    """`score_plain` of each split's items, generated in one call."""
    conditions = [plain_condition(model, items, style) for items in splits.values()]
    return {
        name: {**accuracy_summary(rows, settings), "items": rows}
        for name, rows in zip(splits, condition_rows(model, conditions, style, settings))
    }


def condition_rows(
    model: Model, conditions: Sequence[Condition], style: Style, settings: AttackSettings
) -> list[list[dict[str, Any]]]:
    """`generate_rows` of every condition, from one generation call over all their prompts
    (larger batches: a CPU decodes 64 rows nearly as fast as 8)."""
    prompts = [encode_prompts(model, c.prompts, style) for c in conditions]
    flat = [ids for condition_ids in prompts for ids in condition_ids]
    texts = iter(_generations(model, flat, settings))
    return [
        _judged(condition, [next(texts) for _ in condition_ids])
        for condition, condition_ids in zip(conditions, prompts)
    ]


def generate_rows(
    model: Model,
    condition: Condition,
    style: Style,
    settings: AttackSettings,
    *,
    edit: EmbeddingEdit | None = None,
    ids: Sequence[Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Greedy generations for the condition's prompts (or for ``ids``, their token ids when
    an attack changed them), with the input embeddings changed by ``edit`` when given (see
    `remnant.scoring.generate`), each judged by the condition."""
    if ids is None:
        ids = encode_prompts(model, condition.prompts, style)
    return _judged(condition, _generations(model, ids, settings, edit))


def _generations(
    model: Model,
    ids: Sequence[Sequence[int]],
    settings: AttackSettings,
    edit: EmbeddingEdit | None = None,
) -> list[str]:
    return generate(
        model,
        ids,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.generation_batch_size,
        edit=edit,
    )


def _judged(condition: Condition, generations: Sequence[str]) -> list[dict[str, Any]]:
    """One row per item of ``condition``: its generation, judged by the condition."""
    return [
        {
            "question": item.question,
            "answer": item.answer,
            "base": base,
            "prompt": prompt,
            "generation": text,
            "correct": bool(condition.judge(item, text)),
            "answered": bool(normalize(text)),
            "rouge_l_recall": rounded(rouge_l_recall(item.answer, text)),
        }
        for item, base, prompt, text in zip(
            condition.items, condition.bases, condition.prompts, generations
        )
    ]


def gap_recovery(
    attacked: Sequence[bool],
    unlearned: Sequence[bool],
    original: Sequence[bool],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """(mean attacked − mean unlearned) / (mean original − mean unlearned) over paired rows
    (per row: the unlearned model under attack, the unlearned and the original model asked
    plainly), with a 95% percentile bootstrap CI from resampling rows jointly (whole
    ``clusters`` of rows when given: several prompts about one item). ``value`` and ``ci`` are
    None, and ``reason`` says why, when the 95% CI of the denominator (the gap that unlearning
    opened) includes 0. ``gap`` is the denominator with its CI."""
    a, u, o = (np.asarray(x, dtype=np.float64) for x in (attacked, unlearned, original))
    if a.size == 0:
        return {"value": None, "ci": [None, None], "gap": None, "gap_ci": [None, None],
                "reason": "no items"}  # fmt: skip
    ra, ru, ro = cluster_resamples([a, u, o], clusters, n_resamples=n_bootstrap, seed=seed)
    gaps = ro - ru
    gap = float(o.mean() - u.mean())
    gap_ci = [rounded(v) for v in np.percentile(gaps, [2.5, 97.5])]
    out = {"gap": rounded(gap), "gap_ci": gap_ci}
    if gap_ci[0] <= 0 <= gap_ci[1]:
        reason = (
            f"undefined: the original-minus-unlearned gap {gap:.3f} has a 95% CI "
            f"[{gap_ci[0]:.3f}, {gap_ci[1]:.3f}] that includes 0"
        )
        return {"value": None, "ci": [None, None], **out, "reason": reason}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(gaps != 0, (ra - ru) / gaps, np.nan)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    value = (a.mean() - u.mean()) / gap
    return {"value": rounded(value), "ci": [rounded(low), rounded(high)], **out, "reason": None}


def paired_difference(
    first: Sequence[float],
    second: Sequence[float],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """mean(first) − mean(second) over paired rows (the same items scored twice), with a 95%
    percentile bootstrap CI from resampling the pairs; ``value`` None for no rows."""
    a, b = (np.asarray(x, dtype=np.float64) for x in (first, second))
    if a.size == 0:
        return {"value": None, "ci": [None, None]}
    ra, rb = cluster_resamples([a, b], None, n_resamples=n_bootstrap, seed=seed)
    low, high = np.percentile(ra - rb, [2.5, 97.5])
    return {"value": rounded(a.mean() - b.mean()), "ci": [rounded(low), rounded(high)]}


def reset_weights(copy: Model, source: Model) -> None:
    """Put ``source``'s weights back into ``copy`` (a `remnant.models.load_copy` of it that an
    attack edited), in place."""
    with torch.no_grad():
        for name, tensor in copy.parameters.items():
            tensor.copy_(source.parameters[name])
    copy.same_weights_as(source)


def correct_column(scores: dict[str, Any]) -> list[float]:
    """1.0 / 0.0 per item row of an accuracy summary (``scores["items"]``): was it correct."""
    return [float(row["correct"]) for row in scores["items"]]
