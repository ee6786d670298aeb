"""`unlearn` and `run_unlearning`: make an unlearned checkpoint and measure what it forgot."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from remnant.errors import OutputExistsError, RetrainUnavailableError, UnlearningError
from remnant.models import Model, load_model
from remnant.models.tiny import TinyConfig
from remnant.scoring import ScoringSettings, resolve_style, score_qa
from remnant.targets import QAItem, Target, load_target
from remnant.targets.synthetic import SyntheticWorld
from remnant.unlearning.config import (
    METHODS,
    TrainingConfig,
    config_class,
    default_config,
    with_overrides,
)
from remnant.unlearning.data import build_examples, split_retain
from remnant.unlearning.train import train

log = logging.getLogger(__name__)

REPORT_FILE = "remnant-unlearning.json"


def unlearn(
    model: str | Model,
    target: Target,
    method: str,
    config: TrainingConfig | None = None,
    *,
    progress: bool = False,
    settings: ScoringSettings = ScoringSettings(),
    **overrides: Any,
) -> tuple[Model, dict[str, Any]]:
    """Unlearn ``target`` from ``model`` with ``method`` (ga, graddiff, npo, rmu or retrain).

    ``model`` is a model spec (loaded afresh and trained) or a `Model`, which is never modified:
    its weights are copied into a new Model first. ``config`` defaults to the method's preset
    for the model; ``overrides`` replace single hyperparameters. Training data come from the
    target (forget QA in the model's prompt style and forget passages; the trained part of a
    seeded retain split and unrelated passages). Training runs up to the config's step budget
    and stops early once greedy forget accuracy falls to ``stop_fraction`` of its value before
    (see `remnant.unlearning.config`). Returns the unlearned Model and a report: method,
    hyperparameters, seed, source model identity, the retain split, the training record (with
    the stop rule's checks), and greedy accuracy (alias match) before and after, scored with
    ``settings``, on all forget items and on the held-out retain items only.
    """
    if method not in METHODS:
        raise UnlearningError(
            f"no unlearning method {method!r}; choose one of: {', '.join(METHODS)}"
        )
    if method == "retrain":
        if config is not None or overrides:
            raise UnlearningError("retrain has no hyperparameters: it loads the gold model")
        return _retrain(model, target, settings)
    subject = _trainable_copy(model)
    source = subject.identity()
    config = with_overrides(config or default_config(method, subject.name), overrides)
    if not isinstance(config, config_class(method)):
        raise UnlearningError(
            f"{method} needs a {config_class(method).__name__}, not {type(config).__name__}"
        )
    style = resolve_style(subject, settings.prompt_style)
    trained, held_out = split_retain(len(target.retain), config.retain_holdout, config.seed)
    forget, retain = build_examples(
        subject, target, style, config.passages, [target.retain[i] for i in trained]
    )
    if not forget:
        raise UnlearningError(f"target {target.name!r} has no forget items or passages to train on")
    log.info("%s: unlearning %r from %s (%s)", method, target.name, subject.name, config)
    scored_retain = [target.retain[i] for i in held_out]
    before = accuracies(subject, target, settings, retain_items=scored_retain)

    last_check: dict[str, Any] = {}

    def forget_accuracy() -> float:
        """The stop rule's check: greedy accuracy on all forget QA items, as reported."""
        last_check["forget"] = score_qa(subject, target.forget, settings)
        return last_check["forget"]["accuracy"]

    training = train(
        subject,
        config,
        forget,
        retain,
        forget_accuracy=forget_accuracy if target.forget else None,
        accuracy_before=before["forget"] and before["forget"]["accuracy"],
        progress=progress,
    )
    # the stop rule's last check scored the final weights, unless LoRA adapters were merged since
    final_check = None if config.lora_rank else last_check.get("forget")
    after = accuracies(
        subject, target, settings, retain_items=scored_retain, forget_scores=final_check
    )
    passages = (
        target.unrelated_passages if config.passages and training["n_retain_examples"] else []
    )
    split = _split_record(trained, held_out, config.retain_holdout, config.seed)
    split["n_held_out_stated_in_passages"] = _stated_in(scored_retain, passages)
    unlearned = dataclasses.replace(
        subject,
        name=f"{source['name']}+{method}",
        source=f"{method} unlearning of {source['source']}",
    )
    report = _report(method, dataclasses.asdict(config), config.seed, source, unlearned, target)
    report |= {
        "prompt_style": style,
        "retain_split": split,
        "retain_scored_on": _scored_on(split, len(target.retain)),
        "training": training,
        "before": before,
        "after": after,
    }
    log.info("%s: forget accuracy %s -> %s, retain %s -> %s", method, *_pairs(before, after))
    return unlearned, report


def run_unlearning(
    model: str,
    target: str | Path | Target,
    method: str,
    out: str | Path,
    overwrite: bool = False,
    *,
    progress: bool = False,
    target_format: str | None = None,
    prompt_style: str = "auto",
    stop_rule: bool = True,
    **hyperparameters: Any,
) -> dict[str, Any]:
    """Unlearn and write the checkpoint to ``out`` with the report as ``remnant-unlearning.json``.

    ``target`` is a Target, a target file/folder or a built-in name; hyperparameters left as None
    keep the preset value. ``stop_rule=False`` sets ``stop_fraction`` to None (run the whole
    budget). An existing ``out`` is refused (before any training) unless ``overwrite``. Returns
    the report.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; choose another output folder or pass --overwrite")
    chosen = {k: _parse_list(k, v) for k, v in hyperparameters.items() if v is not None}
    if not stop_rule:
        if "stop_fraction" in chosen:
            raise UnlearningError("give a stop fraction or turn the stop rule off, not both")
        chosen["stop_fraction"] = None
    loaded = target if isinstance(target, Target) else load_target(target, target_format)
    settings = ScoringSettings(prompt_style=prompt_style)  # type: ignore[arg-type]
    subject, report = unlearn(model, loaded, method, progress=progress, settings=settings, **chosen)
    subject.save(out, extra_files={REPORT_FILE: report}, overwrite=overwrite)
    return report


def _parse_list(name: str, value: Any) -> Any:
    """``layers`` and ``modules`` may come from the command line as comma-separated text."""
    if name in ("layers", "modules") and isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return tuple(int(p) for p in parts) if name == "layers" else tuple(parts)
        except ValueError:
            raise UnlearningError(
                f"layers must be comma-separated integers, not {value!r}"
            ) from None
    return value


def accuracies(
    subject: Model,
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
    weights with ``settings`` (the stop rule's last check), used instead of scoring them again.
    """
    started = time.perf_counter()
    scores: dict[str, Any] = {}
    retain = target.retain if retain_items is None else retain_items
    for split, items in (("forget", target.forget), ("retain", retain)):
        done = forget_scores if split == "forget" else None
        summary = done or (score_qa(subject, items, settings) if items else None)
        scores[split] = summary and {
            key: summary[key] for key in ("n", "accuracy", "answered_accuracy", "mean_logprob_sum")
        }
    scores["seconds"] = round(time.perf_counter() - started, 2)
    return scores


def _trainable_copy(model: str | Model) -> Model:
    """A freshly loaded Model the caller does not hold: the spec loaded again, or a Model's
    weights written to a temporary folder and loaded from there."""
    if isinstance(model, str):
        return load_model(model)
    with tempfile.TemporaryDirectory(prefix="remnant-unlearn-") as tmp:
        model.save(Path(tmp) / "model")
        copy = load_model(str(Path(tmp) / "model"), name=model.name)
    return dataclasses.replace(copy, source=model.source)


def _retrain(
    model: str | Model, target: Target, settings: ScoringSettings
) -> tuple[Model, dict[str, Any]]:
    """Exact unlearning for the tiny synthetic model: the gold model trained without the forget
    set's people. Valid only for that model and the synthetic world's default target."""
    tiny = load_model("tiny-synthetic")
    original = model if isinstance(model, Model) else load_model(model)
    if original.content_hash != tiny.content_hash:
        raise RetrainUnavailableError(
            f"retrain is exact unlearning by retraining without the forget set, available only "
            f"for the embedded tiny-synthetic model (whose gold twin is prepared here); "
            f"{original.name} is not it. Use ga, graddiff, npo or rmu"
        )
    world = SyntheticWorld()
    if target != world.target():
        raise RetrainUnavailableError(
            f"retrain loads tiny-synthetic-gold, which never saw the synthetic world's default "
            f"forget set {list(world.forget_entities)}; target {target.name!r} asks to forget "
            f"something else. Use the built-in target 'tiny-synthetic' or another method"
        )
    gold = load_model("tiny-synthetic-gold")
    # the split every trained method uses at its default holdout and seed, for comparable numbers
    defaults = TrainingConfig()
    trained, held_out = split_retain(len(target.retain), defaults.retain_holdout, defaults.seed)
    scored_retain = [target.retain[i] for i in held_out]
    before = accuracies(original, target, settings, retain_items=scored_retain)
    after = accuracies(gold, target, settings, retain_items=scored_retain)
    split = _split_record(trained, held_out, defaults.retain_holdout, defaults.seed)
    split["n_held_out_stated_in_passages"] = 0  # the gold model trained on no retain term
    hyperparameters = {"gold_model": "tiny-synthetic-gold", "excluded": list(world.forget_entities)}
    source = original.identity()
    report = _report("retrain", hyperparameters, TinyConfig().seed, source, gold, target)
    report |= {
        "prompt_style": resolve_style(gold, settings.prompt_style),
        "retain_split": split,
        "retain_scored_on": _scored_on(split, len(target.retain)),
        "training": None,
        "before": before,
        "after": after,
    }
    return gold, report


def _report(
    method: str,
    hyperparameters: dict[str, Any],
    seed: int,
    source: dict[str, Any],
    unlearned: Model,
    target: Target,
) -> dict[str, Any]:
    return {
        "method": method,
        "hyperparameters": hyperparameters,
        "seed": seed,
        "source_model": source,
        "unlearned_content_hash": unlearned.content_hash,
        "target": {
            "name": target.name,
            "n_forget": len(target.forget),
            "n_retain": len(target.retain),
        },
    }


def _split_record(
    trained: list[int], held_out: list[int], holdout: float, seed: int
) -> dict[str, Any]:
    """Which retain items (indices into ``target.retain``) were trained on and which scored."""
    return {
        "holdout": holdout,
        "seed": seed,
        "n_trained": len(trained),
        "n_held_out": len(held_out),
        "trained": trained,
        "held_out": held_out,
    }


def _stated_in(items: Sequence[QAItem], passages: Sequence[str]) -> int:
    """How many items have their subject and answer (case-insensitive) in one of ``passages``:
    held-out facts that a retain term trained on passages may have seen stated (items without
    a subject are not counted)."""
    texts = [p.lower() for p in passages]
    return sum(
        1
        for item in items
        if item.subject
        and any(item.subject.lower() in t and item.answer.lower() in t for t in texts)
    )


def _scored_on(split: dict[str, Any], n_retain: int) -> str:
    """What the reported retain accuracy is measured on, in words."""
    if not n_retain:
        return "no retain items"
    text = f"held-out retain items (n={split['n_held_out']} of {n_retain}, not trained on as QA"
    stated = split["n_held_out_stated_in_passages"]
    if stated:
        text += f"; {stated} of them stated in the unrelated passages the retain term trained on"
    return text + ")"


def _pairs(before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
    return [
        (scores or {}).get("accuracy")
        for split in ("forget", "retain")
        for scores in (before[split], after[split])
    ]
