"""Relearning: fine-tune a copy of each model on a small budget and score the held-out forget
items along the way.

Three kinds of training data, each a curve of held-out accuracy against optimizer steps:

- ``forget``: the fit split's QA items as text (prompt + answer, the loss on the answer), plus
  the target's forget passages that do not give any held-out answer away;
- ``unrelated``: unrelated text only (up to ``unrelated_examples`` of the target's unrelated
  passages; Łucki et al., 2024, recover most of RMU's hazardous accuracy from 10 unrelated
  examples);
- ``retain``: the target's retain QA items only.

And *retraining on T* (Deeb & Roger, 2024): the forget items are cut into ``rtt_folds`` folds of
whole entity groups; in turn, ``rtt_rounds`` of them are held out, the model is fine-tuned on
the other folds and scored on the held-out fold, for every learning rate of ``rtt_lrs``. The
best rate is chosen on those held-out scores, which the result says.

Relearning can teach as well as reveal (Feng et al., 2025): every procedure also runs on the
original model and on the gold model when given, with the same data, budget and seed. The gold
model never knew the held-out facts, so its accuracy after relearning is what the data and the
budget can teach; recovery counts above that line (above the unlearned model's own accuracy
before relearning when no gold model is given).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from remnant.attacks.protocol import (
    AttackSettings,
    Split,
    attack_models,
    correct_column,
    entity_groups,
    gap_recovery,
    model_work,
    paired_difference,
    reset_weights,
    score_plain,
    split_forget,
    without_answer,
)
from remnant.errors import TargetError
from remnant.models.loading import load_copy
from remnant.models.model import Model
from remnant.results import Result
from remnant.scoring import Style, accuracy_summary, resolve_style
from remnant.settings import InstanceOf, Interval, require
from remnant.targets.model import QAItem, Target
from remnant.unlearning.config import TrainingConfig
from remnant.unlearning.data import Example, passage_examples, qa_examples
from remnant.unlearning.train import fine_tune

log = logging.getLogger(__name__)

#: The kinds of training data, in the order results list them.
DATA = ("forget", "unrelated", "retain")
#: The linear projections of attention and MLP in Llama-style models (Łucki et al. put LoRA on
#: attention and MLP projections).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_POSITIVE = Interval(int, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RelearnSettings(AttackSettings):
    """Training data, budget and optimiser of the relearning attack (AdamW, constant rate, no
    weight decay; LoRA adapters unless ``lora_rank`` is 0), and the retraining-on-T protocol.
    Defaults follow Łucki et al. (LoRA r 128, alpha 16, lr 2e-4, attention and MLP projections)
    with a budget that runs in minutes on SmolLM2-135M on 2 CPU cores."""

    constraints = {
        "data": InstanceOf(tuple),
        "steps": _POSITIVE,
        "eval_every": _POSITIVE,
        "lr": Interval(float, 0, open_low=True),
        "train_batch_size": _POSITIVE,
        "lora_rank": Interval(int, 0),
        "lora_alpha": Interval(float, 0, open_low=True),
        "modules": InstanceOf(tuple),
        "unrelated_examples": _POSITIVE,
        "rtt_folds": Interval(int, 2),
        "rtt_rounds": Interval(int, 0),
        "rtt_lrs": InstanceOf(tuple),
        "rtt_steps": Interval(int, 1, optional=True),
    }

    data: tuple[str, ...] = DATA
    """Which training data to relearn from (curves), of ``forget``, ``unrelated``, ``retain``."""
    steps: int = 16
    """Optimizer steps per curve."""
    eval_every: int = 4
    """Score the held-out items after every this many steps (and before the first)."""
    lr: float = 2e-4
    train_batch_size: int = 8
    """Training examples per optimizer step."""
    lora_rank: int = 128
    """Rank of the LoRA adapters (0: fine-tune the selected weights themselves)."""
    lora_alpha: float = 16.0
    modules: tuple[str, ...] = PROJECTIONS
    """Name fragments of the weights trained (or adapted), such as ``q_proj``; empty: every
    weight."""
    unrelated_examples: int = 10
    """Most unrelated passages in the ``unrelated`` data."""
    rtt_folds: int = 5
    """Folds of whole entity groups the forget items are cut into for retraining on T."""
    rtt_rounds: int = 2
    """Folds held out in turn (each round trains on the other folds); 0: no retraining on T."""
    rtt_lrs: tuple[float, ...] = (2e-4, 1e-3)
    """Learning rates tried in retraining on T; the best is chosen on the held-out folds."""
    rtt_steps: int | None = None
    """Optimizer steps per retraining-on-T run (None: ``steps``)."""

    def check(self) -> None:
        require(
            bool(self.data) and set(self.data) <= set(DATA),
            f"RelearnSettings.data must name some of {', '.join(DATA)}, not {self.data!r}",
        )
        require(
            self.rtt_rounds <= self.rtt_folds,
            f"RelearnSettings.rtt_rounds ({self.rtt_rounds}) cannot exceed rtt_folds "
            f"({self.rtt_folds})",
        )
        require(
            bool(self.rtt_lrs) and all(float(lr) > 0 for lr in self.rtt_lrs),
            f"RelearnSettings.rtt_lrs must be positive learning rates, not {self.rtt_lrs!r}",
        )

    def training(self, lr: float, steps: int) -> TrainingConfig:
        """The fine-tuning of one relearning run: ``steps`` steps at learning rate ``lr`` with
        these settings' batch size, seed, weights and LoRA adapters, no stop rule."""
        return TrainingConfig(
            lr=lr,
            steps=steps,
            batch_size=self.train_batch_size,
            stop_fraction=None,
            seed=self.seed,
            modules=self.modules,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
        )


@dataclasses.dataclass(frozen=True)
class RelearnResult(Result):
    """Held-out forget accuracy of each model while it is fine-tuned on each kind of data, and
    the retraining-on-T result; recovery is stated above the gold model's line."""

    kind = "relearn"

    models: dict[str, dict[str, Any]]
    """Identity of each model by role (``original``, ``unlearned``, ``gold`` when given), taken
    before the attack; the attack trains copies, so these models are unchanged after it."""
    target: str
    settings: dict[str, Any]
    """The attack's settings, with the prompt style resolved."""
    split: dict[str, Any]
    """The fit / held-out split of the curves (`remnant.attacks.protocol.Split.record`)."""
    line: str
    """What recovery is measured above: ``gold`` (the gold model after the same relearning) or
    ``unlearned before relearning`` (no gold model given)."""
    curves: list[dict[str, Any]]
    """Per kind of training data: ``data``, ``n_examples``, ``notes``, ``steps`` (where it was
    scored; 0 is before training), per role ``points`` (``accuracy`` and ``ci`` per scored step)
    and ``loss`` (training loss per step, nats per token), ``final`` (per role: the held-out
    scores after the last step, with per-item generations), ``above_line`` (unlearned minus the
    line's accuracy on the same items after the last step, with a 95% bootstrap CI),
    ``gain`` (the unlearned model's accuracy after the last step minus before the first, 95%
    CI), ``recovered`` (the CIs of both lie above 0: relearning brought answers back beyond what
    it teaches) and ``gap_recovery`` (of the final accuracy)."""
    rtt: dict[str, Any] | None
    """Retraining on T: ``folds`` (questions per fold), ``rounds`` (indices of the folds held
    out in turn), ``n`` (items scored), ``before`` (per role: accuracy on those items before any
    training), ``by_lr`` (per role, per rate: accuracy and CI), ``best`` (per role: the rate
    with the highest accuracy, its accuracy and CI), ``selected_on_held_out`` (true: the rate
    was chosen on the scores it reports), ``above_line``, ``recovered`` and ``gain`` as for the
    curves (at each model's best rate).
    None when ``rtt_rounds`` is 0."""
    seconds: dict[str, float]
    """Wall time by model role (training and scoring)."""

    def summary(self) -> dict[str, Any]:
        """Per kind of data the final accuracy of each model and the recovery above the line;
        the retraining-on-T best accuracies."""
        out: dict[str, Any] = {"line": self.line}
        for curve in self.curves:
            out[curve["data"]] = {
                **{role: scores["accuracy"] for role, scores in curve["final"].items()},
                "above_line": curve["above_line"],
                "recovered": curve["recovered"],
                "gain": curve["gain"],
            }
        if self.rtt is not None:
            out["rtt"] = {
                **{role: best["accuracy"] for role, best in self.rtt["best"].items()},
                "above_line": self.rtt["above_line"],
                "recovered": self.rtt["recovered"],
            }
        return out


#: Per model, its relearning curves and retraining-on-T runs (curve records by kind of data,
#: and the retraining run or None).
_Runs = tuple[dict[str, dict[str, Any]], dict[str, Any] | None]


def run(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: RelearnSettings = RelearnSettings(),
    *,
    gold: Model | None = None,
    progress: bool = False,
) -> RelearnResult:
    """Fine-tune a copy of every model (original, unlearned, gold) on each kind of data and by
    retraining on T; held-out forget accuracy along the way and recovery above the line. Each
    model's runs are kept in memory (`remnant.attacks.protocol.model_work`)."""
    models = attack_models(original, unlearned, gold, "run a relearning attack")
    split = split_forget(target, settings.held_out_fraction, settings.seed)
    style = resolve_style(original, settings.prompt_style)
    data = _training_data(original, target, split, style, settings)
    folds = _folds(target, settings) if settings.rtt_rounds else []
    identities = {role: model.identity() for role, model in models.items()}
    curves: dict[str, dict[str, Any]] = {
        name: {"data": name, "n_examples": len(examples), "notes": notes, "runs": {}}
        for name, (examples, notes) in data.items()
    }
    rtt_runs: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for role, model in models.items():
        started = time.perf_counter()

        def compute(model: Model = model, role: str = role) -> _Runs:
            copy = load_copy(model)
            before = score_plain(copy, split.held_out, style, settings)
            runs = {}
            for name, (examples, _) in data.items():
                reset_weights(copy, model)
                runs[name] = _curve(
                    copy, examples, split.held_out, style, settings, before, f"{role}: {name}",
                    progress,
                )  # fmt: skip
            rtt = (
                _retrain_on_t(copy, model, folds, style, settings, role, progress)
                if folds
                else None
            )
            return runs, rtt

        runs, rtt = model_work("relearn", model, original, target, settings, compute, style=style)
        for name, run_record in runs.items():
            curves[name]["runs"][role] = run_record
        if rtt is not None:
            rtt_runs[role] = rtt
        seconds[role] = round(time.perf_counter() - started, 2)
    line = "gold" if gold is not None else "unlearned before relearning"
    return RelearnResult(
        models=identities,
        target=target.name,
        settings=settings.record(prompt_style=style),
        split=split.record(),
        line=line,
        curves=[_curve_record(curve, settings) for curve in curves.values()],
        rtt=_rtt_record(rtt_runs, folds, settings) if folds else None,
        seconds=seconds,
    )


def _training_data(
    model: Model, target: Target, split: Split, style: Style, settings: RelearnSettings
) -> dict[str, tuple[list[Example], dict[str, Any]]]:
    """Per kind of data asked for and available: training examples and what was done to them."""
    out: dict[str, tuple[list[Example], dict[str, Any]]] = {}
    if "forget" in settings.data:
        passages = list(target.forget_passages)
        for item in split.held_out:
            passages = without_answer(item, passages)
        examples = qa_examples(model, split.fit, style) + passage_examples(model, passages)
        notes = {
            "fit_items": len(split.fit),
            "passages": len(passages),
            "passages_giving_held_out_answers_dropped": len(target.forget_passages) - len(passages),
        }
        out["forget"] = (examples, notes)
    if "unrelated" in settings.data and target.unrelated_passages:
        chosen = list(target.unrelated_passages[: settings.unrelated_examples])
        out["unrelated"] = (passage_examples(model, chosen), {"passages": len(chosen)})
    if "retain" in settings.data and target.retain:
        out["retain"] = (qa_examples(model, target.retain, style), {"items": len(target.retain)})
    if not out:
        raise TargetError(
            f"target {target.name!r} has none of the training data asked for "
            f"({', '.join(settings.data)}): unrelated needs unrelated passages, retain needs "
            "retain items"
        )
    return out


def _curve(
    model: Model,
    examples: Sequence[Example],
    items: Sequence[QAItem],
    style: Style,
    settings: RelearnSettings,
    before: dict[str, Any],
    desc: str,
    progress: bool,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``examples``, scoring ``items`` every ``eval_every`` steps."""
    points = {0: before}

    def score(step: int) -> None:
        if step % settings.eval_every == 0 or step == settings.steps:
            points[step] = score_plain(model, items, style, settings)

    loss = fine_tune(
        model, examples, settings.training(settings.lr, settings.steps), after_step=score,
        desc=desc, progress=progress,
    )  # fmt: skip
    return {"points": points, "loss": loss}


def _folds(target: Target, settings: RelearnSettings) -> list[list[QAItem]]:
    """The forget items in ``rtt_folds`` folds of whole entity groups (seeded order; each group
    goes to the fold with fewest items so far)."""
    items = target.forget
    groups = entity_groups(target, items)
    n_groups = max(groups) + 1
    if n_groups < settings.rtt_folds:
        raise TargetError(
            f"retraining on T needs {settings.rtt_folds} folds of whole entity groups, but target "
            f"{target.name!r} has {n_groups} group(s); lower rtt_folds or set rtt_rounds to 0"
        )
    order = list(range(n_groups))
    random.Random(f"{settings.seed}-rtt").shuffle(order)
    folds: list[list[QAItem]] = [[] for _ in range(settings.rtt_folds)]
    for group in order:
        members = [item for item, g in zip(items, groups) if g == group]
        min(folds, key=len).extend(members)
    return folds


def _retrain_on_t(
    copy: Model,
    source: Model,
    folds: list[list[QAItem]],
    style: Style,
    settings: RelearnSettings,
    role: str,
    progress: bool,
) -> dict[str, Any]:
    """For each rate and each held-out fold in turn: train ``copy`` (reset to ``source``) on
    the other folds, score the held-out fold. Per-item rows before training and per rate."""
    held = [item for fold in folds[: settings.rtt_rounds] for item in fold]
    reset_weights(copy, source)
    before = score_plain(copy, held, style, settings)["items"]
    training = [
        qa_examples(copy, [item for j, fold in enumerate(folds) if j != k for item in fold], style)
        for k in range(settings.rtt_rounds)
    ]
    by_lr: dict[str, list[dict[str, Any]]] = {}
    for lr in settings.rtt_lrs:
        rows: list[dict[str, Any]] = []
        for k in range(settings.rtt_rounds):
            reset_weights(copy, source)
            fine_tune(
                copy, training[k], settings.training(lr, settings.rtt_steps or settings.steps),
                desc=f"{role}: RTT lr={lr:g} fold {k + 1}/{settings.rtt_rounds}",
                progress=progress,
            )  # fmt: skip
            rows += score_plain(copy, folds[k], style, settings)["items"]
        by_lr[f"{lr:g}"] = rows
    return {"before": before, "by_lr": by_lr}


def _curve_record(curve: dict[str, Any], settings: RelearnSettings) -> dict[str, Any]:
    runs = curve.pop("runs")
    steps = sorted(next(iter(runs.values()))["points"])
    final = {role: run["points"][steps[-1]] for role, run in runs.items()}
    before = {role: run["points"][0] for role, run in runs.items()}
    return {
        **curve,
        "steps": steps,
        "points": {
            role: [
                {"step": s, "accuracy": run["points"][s]["accuracy"], "ci": run["points"][s]["ci"]}
                for s in steps
            ]
            for role, run in runs.items()
        },
        "loss": {role: run["loss"] for role, run in runs.items()},
        "final": final,
        **_above_line(final, before, settings),
        "gap_recovery": gap_recovery(
            correct_column(final["unlearned"]),
            correct_column(before["unlearned"]),
            correct_column(before["original"]),
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
        ),
    }


def _rtt_record(
    runs: dict[str, dict[str, Any]], folds: list[list[QAItem]], settings: RelearnSettings
) -> dict[str, Any]:
    by_lr = {
        role: {lr: accuracy_summary(rows, settings) for lr, rows in run["by_lr"].items()}
        for role, run in runs.items()
    }
    best_lr = {
        role: max(scores, key=lambda lr: (scores[lr]["accuracy"], -float(lr)))
        for role, scores in by_lr.items()
    }
    final = {role: {"items": runs[role]["by_lr"][lr]} for role, lr in best_lr.items()}
    before = {role: {"items": run["before"]} for role, run in runs.items()}
    return {
        "folds": [[item.question for item in fold] for fold in folds],
        "rounds": list(range(settings.rtt_rounds)),
        "n": len(runs["unlearned"]["before"]),
        "before": {
            role: accuracy_summary(run["before"], settings)["accuracy"]
            for role, run in runs.items()
        },
        "by_lr": by_lr,
        "best": {
            role: {"lr": float(lr), **{k: by_lr[role][lr][k] for k in ("accuracy", "ci")}}
            for role, lr in best_lr.items()
        },
        "selected_on_held_out": True,
        **_above_line(final, before, settings),
    }


def _above_line(
    final: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], settings: RelearnSettings
) -> dict[str, Any]:
    """The unlearned model's accuracy after relearning minus the line's on the same items (the
    gold model's after the same relearning, else its own before relearning), and minus its own
    before relearning (``gain``), each with a 95% bootstrap CI; ``recovered`` when both CIs
    lie above 0 (relearning brought answers back, beyond what it teaches a model that never knew
    them)."""
    line = final["gold"] if "gold" in final else before["unlearned"]
    ci = {"n_bootstrap": settings.n_bootstrap, "seed": settings.seed}
    after = correct_column(final["unlearned"])
    difference = paired_difference(after, correct_column(line), **ci)
    gain = paired_difference(after, correct_column(before["unlearned"]), **ci)
    lows = (difference["ci"][0], gain["ci"][0])
    return {
        "above_line": difference,
        "recovered": all(low is not None and low > 0 for low in lows),
        "gain": gain,
    }
