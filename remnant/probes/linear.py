"""Per-layer linear probes with controls: can forgotten knowledge still be read out of the
residual stream after unlearning?

Each task fits a logistic-regression probe (standardised features, L2 strength chosen by
grouped inner cross-validation) at every residual-stream layer (embedding output, then every
block output), read at the last token, and scores it on held-out items: no item is in both the
fit and the held-out split, and every scored item is held out exactly once (seeded group k-fold).

* ``truth``: true vs false statements (question prompt + answer, read at the last answer
  token). Items are put in swap sets of two or three of the same group, and each item is also
  stated with the answer of the next member, so every answer is once true and once false: a
  probe reading only the answer or only the question scores exactly 0.5. Fitted on the retain
  statements plus the forget statements of the other folds; swap sets are held out whole.
* ``recall``: which answer a question has, read at the last prompt token, before any answer
  is shown. Classes are the answers that at least two QA items share (so a held-out item's
  answer can be learned from other items); fitted like ``truth``. This needs no "truth
  direction", which small models trained only on facts lack.
* ``mcq``: which option of a multiple-choice prompt is correct (Lynch et al., 2024). Every item
  is shown once per cyclic rotation of its choices, so each position is right equally often.
* ``concept``: sentences of forget passages vs sentences of unrelated passages (held out in
  sets of one passage of each kind). It shows the topic is represented, not that facts are
  known: reported, not counted as knowledge.

Controls, per layer: the same probe on the original model; a control task whose labels are
permuted within each held-out unit (so label counts are kept), fitted with the same features,
folds and regularisation as the real probe (selectivity = accuracy - control accuracy, after
Hewitt & Liang, 2019); the probe fitted on the original model applied unchanged to the
unlearned model (transfer); a bootstrap interval over held-out items.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from remnant.errors import TargetError
from remnant.models.cache import Memo, cache_key
from remnant.models.compat import check_compatible
from remnant.models.model import Model
from remnant.probes.activations import EncodedPrompt, extract, hook_names
from remnant.results import Result
from remnant.scoring import (
    encode_answers,
    encode_prompts,
    format_prompt,
    mcq_prompt,
    normalize,
    resolve_style,
)
from remnant.scoring.statistics import bootstrap_ci, rounded
from remnant.settings import Constraint, Interval, OneOf, ScoringSettings
from remnant.targets.model import MCQItem, QAItem, Target

TASKS = ("truth", "recall", "mcq", "concept")
KNOWLEDGE_TASKS = ("truth", "recall", "mcq")
_NEEDS = {
    "truth": "at least four forget items with different answers",
    "recall": "at least two forget items whose answer another QA item shares",
    "mcq": "multiple-choice items (`mcq:`)",
    "concept": "both forget passages and unrelated passages",
}
_SENTENCE_END = re.compile(r"(?<=[a-z0-9]{2}[.!?])\s+")


@dataclasses.dataclass(frozen=True)
class _NonEmptySequence(Constraint):
    """A non-empty list or tuple whose every element ``each`` accepts; ``optional`` allows
    None."""

    each: Constraint
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        return (
            isinstance(value, (list, tuple))
            and len(value) > 0
            and all(self.each.accepts(v) for v in value)
        )

    def describe(self) -> str:
        text = f"a non-empty sequence, each {self.each.describe()}"
        return text + (" (or None)" if self.optional else "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeSettings(ScoringSettings):
    """How the probes are built, fitted and scored; recorded in every result."""

    constraints: ClassVar[dict[str, Constraint]] = {
        "tasks": _NonEmptySequence(OneOf(TASKS), optional=True),
        "folds": Interval(int, 2),
        "inner_folds": Interval(int, 2),
        "Cs": _NonEmptySequence(Interval(float, 0, open_low=True)),
        "tol": Interval(float, 0, open_low=True),
        "max_iter": Interval(int, 1),
    }

    tasks: tuple[str, ...] | None = None
    """Probe tasks to run (see the module docstring); None runs every task the target has data
    for, while naming a task the target cannot support is an error. A list is kept as a
    tuple."""
    folds: int = 5
    """Outer folds of the seeded group k-fold over the scored items (capped at the number of
    held-out units)."""
    inner_folds: int = 3
    """Grouped inner folds that choose the L2 strength inside every outer fold (log loss)."""
    Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    """Grid of inverse L2 strengths searched by the inner cross-validation. A list is kept as
    a tuple."""
    tol: float = 1e-3
    """Stopping tolerance of the logistic regression."""
    max_iter: int = 1000
    """Iteration limit of the logistic regression."""

    def check(self) -> None:
        for name in ("tasks", "Cs"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))


@dataclasses.dataclass(frozen=True)
class ProbeResult(Result):
    """Held-out accuracy of linear probes at every residual layer of the original and the
    unlearned model, with controls."""

    kind = "probes"

    original: dict[str, Any]
    """Identity of the original model (name, source, content hash)."""
    unlearned: dict[str, Any]
    """Identity of the unlearned model."""
    target: str
    """Name of the target."""
    settings: dict[str, Any]
    """`ProbeSettings` used, with ``tasks`` the tasks run and the prompt style ``auto``
    resolved."""
    layers: list[str]
    """``layers[i]`` names the hook of layer index ``i`` (0 = embedding output, then every
    block output)."""
    tasks: dict[str, dict[str, Any]]
    """Per task: ``chance``, ``counts_as_knowledge``, ``n_items``, ``n_held_out_examples``,
    ``n_fit_only_examples``, ``n_folds``; for ``original`` and ``unlearned``: per-layer
    ``accuracy`` (fraction correct, mean over held-out items) and ``ci`` (95% bootstrap over
    held-out items, over swap sets for ``truth``), ``control_accuracy`` / ``control_ci``
    (permuted labels), ``selectivity`` (accuracy - control accuracy), and the ``best_layer``
    (argmax of held-out accuracy, so its accuracy is optimistic) with its ``best_accuracy``,
    ``best_ci`` and ``best_selectivity``; ``transfer``: the per-layer ``accuracy`` and ``ci``
    of the original's probes applied unchanged to the unlearned model."""

    def summary(self) -> list[dict[str, Any]]:
        """One row per task: chance and, per model, the best layer, its accuracy, 95% CI and
        selectivity; plus the transfer accuracy at the unlearned model's best layer."""
        rows = []
        for task, scores in self.tasks.items():
            row: dict[str, Any] = {
                "task": task,
                "counts_as_knowledge": scores["counts_as_knowledge"],
                "chance": scores["chance"],
            }
            for model in ("original", "unlearned"):
                curve = scores[model]
                row[model] = {
                    key: curve[f"best_{key}"] for key in ("layer", "accuracy", "ci", "selectivity")
                }
            best = scores["unlearned"]["best_layer"]
            row["transfer_at_unlearned_best"] = scores["transfer"]["accuracy"][best]
            rows.append(row)
        return rows


@dataclasses.dataclass(frozen=True)
class _Examples:
    """One task's examples as text (model independent), with labels and item groups.

    An example is ``texts[i]`` (a question formatted as a prompt when ``as_prompt``, else raw
    text) followed by ``continuations[i]`` as an answer when given. Only ``scored`` examples are
    held out and scored; the others (retain items) are always in the fit split.
    """

    name: str
    texts: list[str]
    continuations: list[str | None]
    as_prompt: bool
    labels: np.ndarray
    groups: np.ndarray
    scored: np.ndarray
    chance: float
    n_items: int


def run(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: ProbeSettings = ProbeSettings(),
) -> ProbeResult:
    """Fit every probe task at every residual layer of both models; see the module docstring.
    The original's probes are fitted once per process for each task and settings
    (`ORIGINAL_FITS`): auditing several models against one original refits only theirs."""
    check_compatible(original, unlearned, "transfer probes")
    tasks = _tasks(target, settings)
    styles = [resolve_style(s, settings.prompt_style) for s in (original, unlearned)]
    names = hook_names(original, "resid")
    results = {}
    for examples in tasks:
        fitted = _original_fits(original, examples, styles[0], names, settings)
        feats = _features(unlearned, examples, styles[1], names, settings.batch_size)
        results[examples.name] = _cross_validate(examples, fitted, feats, settings)
    recorded = settings.record(tasks=[t.name for t in tasks], prompt_style=styles[1])
    return ProbeResult(
        original.identity(), unlearned.identity(), target.name, recorded, names, results
    )


# ---------------------------------------------------------------- building the examples


def _tasks(target: Target, settings: ProbeSettings) -> list[_Examples]:
    build = {
        "truth": _truth_examples,
        "recall": _recall_examples,
        "mcq": _mcq_examples,
        "concept": _concept_examples,
    }
    built = {}
    for task in settings.tasks or TASKS:
        examples = build[task](target, settings.seed)
        if examples is None and settings.tasks is not None:
            raise TargetError(
                f"the {task!r} probe needs {_NEEDS[task]}, and target {target.name!r} has "
                f"not; add them to the target or leave {task!r} out of the probe tasks"
            )
        if examples is not None:
            built[task] = examples
    if not built:
        raise TargetError(
            f"target {target.name!r} supports no probe task; a probe needs "
            + "; or ".join(_NEEDS.values())
        )
    return list(built.values())


def _truth_examples(target: Target, seed: int) -> _Examples | None:
    """True and false statements about the QA items, in swap sets.

    Items are shuffled into sets of two (three for an odd count) within their group, falling
    back to the whole split for items left over; each item is stated with its own answer (true)
    and with the next set member's answer (false). Every answer is then once true and once false
    within its set, so a probe that reads only the answer (or only the question) scores exactly
    chance, and a set is held out as a whole.
    """
    rng = np.random.default_rng(seed)
    texts, continuations, labels, groups, scored = [], [], [], [], []
    n_sets, n_forget = 0, 0
    for split in ("forget", "retain"):
        by_group: dict[str | None, list[QAItem]] = {}
        for item in getattr(target, split):
            by_group.setdefault(item.group, []).append(item)
        sets, left = [], []
        for members in by_group.values():
            placed, unplaced = _swap_sets(members, rng)
            sets += placed
            left += unplaced
        sets += _swap_sets(left, rng)[0]
        for members in sets:
            for k, item in enumerate(members):
                borrowed = members[(k + 1) % len(members)].answer
                for answer, label in ((item.answer, 1), (borrowed, 0)):
                    texts.append(item.question)
                    continuations.append(answer)
                    labels.append(label)
                    groups.append(n_sets)
                    scored.append(split == "forget")
            n_sets += 1
        if split == "forget":
            if n_sets < 2:
                return None
            n_forget = sum(len(m) for m in sets)
    return _Examples(
        "truth",
        texts,
        continuations,
        True,
        np.array(labels),
        np.array(groups),
        np.array(scored),
        0.5,
        n_forget,
    )


def _swap_sets(
    items: Sequence[QAItem], rng: np.random.Generator
) -> tuple[list[list[QAItem]], list[QAItem]]:
    """Shuffled ``items`` in sets of two, plus a third member where one fits, whose answers are
    all different; and the items that fit in no set."""
    pending = [items[i] for i in rng.permutation(len(items))]
    sets, left = [], []
    while pending:
        first = pending.pop(0)
        partner = next((j for j, other in enumerate(pending) if _differ(first, other)), None)
        if partner is None:
            left.append(first)
        else:
            sets.append([first, pending.pop(partner)])
    unplaced = []
    for item in left:
        home = next((s for s in sets if len(s) == 2 and all(_differ(item, o) for o in s)), None)
        if home is None:
            unplaced.append(item)
        else:
            home.append(item)
    return sets, unplaced


def _differ(a: QAItem, b: QAItem) -> bool:
    """Neither item's answer is an accepted answer of the other."""
    accepted_a = {normalize(x) for x in a.accepted_answers}
    accepted_b = {normalize(x) for x in b.accepted_answers}
    return normalize(a.answer) not in accepted_b and normalize(b.answer) not in accepted_a


def _recall_examples(target: Target, seed: int) -> _Examples | None:
    """Question prompts labelled with their (normalised) answer, for answers shared by two or
    more QA items. Chance is the expected accuracy of always naming the commonest answer of
    the item's group."""
    items = [(i, True) for i in target.forget] + [(i, False) for i in target.retain]
    counts = Counter(normalize(i.answer) for i, _ in items)
    kept = [(i, s) for i, s in items if counts[normalize(i.answer)] >= 2]
    if sum(s for _, s in kept) < 2:
        return None
    classes = {a: k for k, a in enumerate(sorted({normalize(i.answer) for i, _ in kept}))}
    by_group: dict[str | None, Counter] = {}
    for item, _ in kept:
        by_group.setdefault(item.group, Counter())[normalize(item.answer)] += 1
    modal = {g: c.most_common(1)[0][1] / c.total() for g, c in by_group.items()}
    return _Examples(
        "recall",
        [i.question for i, _ in kept],
        [None] * len(kept),
        True,
        np.array([classes[normalize(i.answer)] for i, _ in kept]),
        np.arange(len(kept)),
        np.array([s for _, s in kept]),
        float(np.mean([modal[i.group] for i, s in kept if s])),
        sum(s for _, s in kept),
    )


def _mcq_examples(target: Target, seed: int) -> _Examples | None:
    """Every MCQ item once per cyclic rotation of its choices; label = position of the answer."""
    if not target.mcq:
        return None
    texts, labels, groups = [], [], []
    for k, item in enumerate(target.mcq):
        n = len(item.choices)
        for shift in range(n):
            rotated = MCQItem(
                question=item.question,
                choices=item.choices[shift:] + item.choices[:shift],
                answer=(item.answer - shift) % n,
            )
            texts.append(mcq_prompt(rotated))
            labels.append(rotated.answer)
            groups.append(k)
    return _Examples(
        "mcq",
        texts,
        [None] * len(texts),
        True,
        np.array(labels),
        np.array(groups),
        np.ones(len(texts), dtype=bool),
        float(np.mean([1 / len(i.choices) for i in target.mcq])),
        len(target.mcq),
    )


def _concept_examples(target: Target, seed: int) -> _Examples | None:
    """Sentences of forget passages (label 1) and of unrelated passages (label 0). Passages are
    held out in sets of one of each kind (extra passages of the larger kind spread over the
    sets), so no fold is lopsided; chance is the better of the two constant answers."""
    forget, unrelated = target.forget_passages, target.unrelated_passages
    if not (forget and unrelated):
        return None
    n_sets = min(len(forget), len(unrelated))
    passages = [(p, 1, k % n_sets) for k, p in enumerate(forget)]
    passages += [(p, 0, k % n_sets) for k, p in enumerate(unrelated)]
    texts, labels, groups = [], [], []
    for passage, label, group in passages:
        for sentence in _SENTENCE_END.split(passage.strip()):
            texts.append(sentence)
            labels.append(label)
            groups.append(group)
    labels_, groups_ = np.array(labels), np.array(groups)
    share = np.bincount(groups_, weights=labels_) / np.bincount(groups_)
    return _Examples(
        "concept",
        texts,
        [None] * len(texts),
        False,
        labels_,
        groups_,
        np.ones(len(texts), dtype=bool),
        float(max(share.mean(), 1 - share.mean())),
        len(forget) + len(unrelated),
    )


def _features(
    model: Model, examples: _Examples, style: str, names: list[str], batch_size: int
) -> np.ndarray:
    """Last-token residual activations, float32 (n_examples, n_layers + 1, d_model)."""
    if examples.as_prompt:
        ids = encode_prompts(model, [format_prompt(model, t, style) for t in examples.texts], style)
    else:
        ids = [model.tokenizer(t).input_ids for t in examples.texts]
    answers = [c for c in examples.continuations if c is not None]
    if answers:
        answer_ids = iter(encode_answers(model, answers, style))
        ids = [
            p if c is None else p + next(answer_ids) for p, c in zip(ids, examples.continuations)
        ]
    prompts = [EncodedPrompt(tuple(i)) for i in ids]
    acts = extract(model, prompts, names, position="last", batch_size=batch_size)
    return np.stack([acts[n] for n in names], axis=1)


# ---------------------------------------------------------------- fitting and scoring


@dataclasses.dataclass(frozen=True)
class _Fitted:
    """One model's probes on one task: ``probes[fold][layer]``, and per layer and example
    whether the probe (``correct``) and its control (``control``) got it right when held out."""

    probes: list[list[Pipeline]]
    correct: np.ndarray
    control: np.ndarray


#: The original's fitted probes (`_original_fits`).
ORIGINAL_FITS: Memo[_Fitted] = Memo(size=8)


def _original_fits(
    original: Model, examples: _Examples, style: str, names: list[str], settings: ProbeSettings
) -> _Fitted:
    """The original's probes on ``examples``, fitted once per process and kept by the model's
    content hash, the examples, the prompt style and the settings."""
    key = cache_key(
        model=original.content_hash,
        style=style,
        layers=names,
        examples={
            f.name: value.tolist() if isinstance(value, np.ndarray) else value
            for f in dataclasses.fields(examples)
            for value in [getattr(examples, f.name)]
        },
        settings=settings.record(),
    )
    return ORIGINAL_FITS.get(
        key,
        lambda: _fit_all(
            examples, _features(original, examples, style, names, settings.batch_size), settings
        ),
    )


def _fit_all(examples: _Examples, feats: np.ndarray, settings: ProbeSettings) -> _Fitted:
    """Every fold's probe and control at every layer of one model's features
    (n_examples, n_layers, d_model). The (fold, layer) fits run in as many processes as torch
    has threads (one thread each: many small fits gain nothing from more)."""
    labels, groups = examples.labels, examples.groups
    control_labels = _permuted(labels, groups, np.random.default_rng(settings.seed))
    n_layers = feats.shape[1]
    splits = _outer_splits(examples, settings)
    workers = torch.get_num_threads()  # read outside the limit, which caps torch's pool too
    with threadpool_limits(1):
        pairs = Parallel(n_jobs=workers)(
            delayed(_fit_pair)(
                feats[fit, layer],
                labels[fit],
                control_labels[fit],
                _group_folds(groups[fit], settings.inner_folds, settings.seed),
                settings,
            )
            for fit, _ in splits
            for layer in range(n_layers)
        )
    correct, control = (np.zeros((n_layers, len(labels)), dtype=bool) for _ in range(2))
    probes = []
    for k, (_, test) in enumerate(splits):
        fold = pairs[k * n_layers : (k + 1) * n_layers]
        for layer, (probe, fitted_control) in enumerate(fold):
            correct[layer, test] = probe.predict(feats[test, layer]) == labels[test]
            control[layer, test] = (
                fitted_control.predict(feats[test, layer]) == control_labels[test]
            )
        probes.append([probe for probe, _ in fold])
    return _Fitted(probes, correct, control)


def _fit_pair(
    features: np.ndarray,
    labels: np.ndarray,
    control_labels: np.ndarray,
    inner: list[tuple[np.ndarray, np.ndarray]],
    settings: ProbeSettings,
) -> tuple[Pipeline, Pipeline]:
    """A probe (`_fit`) and its control, fitted with the probe's regularisation."""
    probe = _fit(features, labels, inner, settings)
    return probe, _fit_control(features, control_labels, probe[-1].C_, settings)


def _cross_validate(
    examples: _Examples, original: _Fitted, unlearned_feats: np.ndarray, settings: ProbeSettings
) -> dict[str, Any]:
    """Held-out correctness of every probe at every layer, summarised per model, with the
    original's probes (``original``) applied to the unlearned model's features (transfer)."""
    labels, groups = examples.labels, examples.groups
    splits = _outer_splits(examples, settings)
    unlearned = _fit_all(examples, unlearned_feats, settings)
    transfer = np.zeros_like(unlearned.correct)
    for (_, test), fold in zip(splits, original.probes):
        for layer, probe in enumerate(fold):
            transfer[layer, test] = probe.predict(unlearned_feats[test, layer]) == labels[test]
    correct = {
        "original": original.correct,
        "unlearned": unlearned.correct,
        "transfer": transfer,
        "original_control": original.control,
        "unlearned_control": unlearned.control,
    }
    held = np.concatenate([test for _, test in splits])
    curves = {k: _curve(v[:, held], groups[held], settings) for k, v in correct.items()}
    out: dict[str, Any] = {
        "counts_as_knowledge": examples.name in KNOWLEDGE_TASKS,
        "chance": rounded(examples.chance),
        "n_items": examples.n_items,
        "n_held_out_examples": int(held.size),
        "n_fit_only_examples": int((~examples.scored).sum()),
        "n_folds": len(splits),
        "transfer": curves["transfer"],
    }
    for name in ("original", "unlearned"):
        accuracy, ci = curves[name]["accuracy"], curves[name]["ci"]
        control = curves[f"{name}_control"]
        selectivity = [rounded(a - c) for a, c in zip(accuracy, control["accuracy"])]
        best = int(np.argmax(accuracy))
        out[name] = {
            "accuracy": accuracy,
            "ci": ci,
            "control_accuracy": control["accuracy"],
            "control_ci": control["ci"],
            "selectivity": selectivity,
            "best_layer": best,
            "best_accuracy": accuracy[best],
            "best_ci": ci[best],
            "best_selectivity": selectivity[best],
        }
    return out


def _permuted(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Control-task labels: permuted within each group, so every group keeps its label counts;
    groups of one example are permuted together."""
    out = labels.copy()
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    single = counts[index] == 1
    out[single] = rng.permutation(labels[single])
    for group in np.flatnonzero(counts > 1):
        members = np.flatnonzero(index == group)
        out[members] = rng.permutation(labels[members])
    return out


def _curve(correct: np.ndarray, groups: np.ndarray, settings: ProbeSettings) -> dict[str, list]:
    """Per layer: accuracy (mean over items of the item's fraction correct) and bootstrap CI."""
    _, index = np.unique(groups, return_inverse=True)
    sizes = np.bincount(index)
    accuracy, ci = [], []
    for row in correct:
        per_item = np.bincount(index, weights=row.astype(np.float64)) / sizes
        accuracy.append(rounded(per_item.mean()))
        ci.append(
            list(bootstrap_ci(per_item, n_resamples=settings.n_bootstrap, seed=settings.seed))
        )
    return {"accuracy": accuracy, "ci": ci}


def _outer_splits(
    examples: _Examples, settings: ProbeSettings
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds over the scored items; unscored (retain) examples are always in the fit split."""
    held = np.flatnonzero(examples.scored)
    always = np.flatnonzero(~examples.scored)
    return [
        (np.concatenate([always, held[fit]]), held[test])
        for fit, test in _group_folds(examples.groups[held], settings.folds, settings.seed)
    ]


def _group_folds(groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded group k-fold (k capped at the number of groups): indices (fit, test) per fold."""
    splitter = GroupKFold(
        n_splits=min(folds, len(np.unique(groups))), shuffle=True, random_state=seed
    )
    return list(splitter.split(groups, groups=groups))


def _fit(
    features: np.ndarray,
    labels: np.ndarray,
    inner: list[tuple[np.ndarray, np.ndarray]],
    settings: ProbeSettings,
) -> Pipeline:
    """Standardise, then L2 logistic regression with C chosen by grouped CV on log loss."""
    probe = LogisticRegressionCV(
        Cs=list(settings.Cs),
        cv=inner,
        l1_ratios=(0.0,),
        scoring="neg_log_loss",
        tol=settings.tol,
        max_iter=settings.max_iter,
        use_legacy_attributes=False,
    )
    return make_pipeline(StandardScaler(), probe).fit(features, labels)


def _fit_control(
    features: np.ndarray, labels: np.ndarray, C: float, settings: ProbeSettings
) -> Pipeline:
    """The same probe and regularisation fitted to the permuted control labels."""
    probe = LogisticRegression(C=float(C), tol=settings.tol, max_iter=settings.max_iter)
    return make_pipeline(StandardScaler(), probe).fit(features, labels)
