"""`unlearn` and `run_unlearning`: make an unlearned checkpoint and measure what it forgot."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from remnant.errors import OutputExistsError
from remnant.models import Subject, load_subject
from remnant.models.tiny import TinyConfig
from remnant.scoring import ScoringSettings, resolve_style, score_qa
from remnant.targets import Target, load_target
from remnant.targets.synthetic import SyntheticWorld
from remnant.unlearning.config import (
    METHODS,
    TrainingConfig,
    config_class,
    default_config,
    with_overrides,
)
from remnant.unlearning.data import build_examples
from remnant.unlearning.errors import RetrainUnavailableError, UnlearningError
from remnant.unlearning.train import train

log = logging.getLogger(__name__)

REPORT_FILE = "remnant-unlearning.json"


def unlearn(
    model: str | Subject,
    target: Target,
    method: str,
    config: TrainingConfig | None = None,
    *,
    progress: bool = False,
    settings: ScoringSettings = ScoringSettings(),
    **overrides: Any,
) -> tuple[Subject, dict[str, Any]]:
    """Unlearn ``target`` from ``model`` with ``method`` (ga, graddiff, npo, rmu or retrain).

    ``model`` is a model spec (loaded afresh and trained) or a `Subject`, which is never modified:
    its weights are copied into a new Subject first. ``config`` defaults to the method's preset
    for the model; ``overrides`` replace single hyperparameters. Training data come from the
    target (forget QA in the model's prompt style and forget passages; retain QA and unrelated
    passages). Returns the unlearned Subject and a report: method, hyperparameters, seed, source
    model identity, training record, and greedy accuracy (alias match) on the forget and retain
    items before and after, scored with ``settings``; ``retain_scored_on_training_items``
    says whether the method's retain term trained on those same retain items.
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
    forget, retain = build_examples(subject, target, style, config.passages)
    if not forget:
        raise UnlearningError(f"target {target.name!r} has no forget items or passages to train on")
    log.info("%s: unlearning %r from %s (%s)", method, target.name, subject.name, config)
    before = accuracies(subject, target, settings)
    training = train(subject, config, forget, retain, progress=progress)
    after = accuracies(subject, target, settings)
    unlearned = dataclasses.replace(
        subject,
        name=f"{source['name']}+{method}",
        source=f"{method} unlearning of {source['source']}",
    )
    report = _report(method, dataclasses.asdict(config), config.seed, source, unlearned, target)
    report |= {
        "prompt_style": style,
        "training": training,
        "before": before,
        "after": after,
        # the retain term trains on the very retain items scored above: a training-set figure
        "retain_scored_on_training_items": bool(training["n_retain_examples"] and target.retain),
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
    **hyperparameters: Any,
) -> dict[str, Any]:
    """Unlearn and write the checkpoint to ``out`` with the report as ``remnant-unlearning.json``.

    ``target`` is a Target, a target file/folder or a built-in name; hyperparameters left as None
    keep the preset value. An existing ``out`` is refused (before any training) unless
    ``overwrite``. Returns the report.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; choose another output folder or pass --overwrite")
    loaded = target if isinstance(target, Target) else load_target(target, target_format)
    chosen = {k: _parse_list(k, v) for k, v in hyperparameters.items() if v is not None}
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
    subject: Subject, target: Target, settings: ScoringSettings = ScoringSettings()
) -> dict[str, Any]:
    """Greedy accuracy, accuracy over answered items and mean answer log-probability (nats) on
    the forget and retain QA items (None for an empty split), plus the seconds it took."""
    started = time.perf_counter()
    scores: dict[str, Any] = {}
    for split in ("forget", "retain"):
        items = getattr(target, split)
        summary = score_qa(subject, items, settings) if items else None
        scores[split] = summary and {
            key: summary[key] for key in ("n", "accuracy", "answered_accuracy", "mean_logprob_sum")
        }
    scores["seconds"] = round(time.perf_counter() - started, 2)
    return scores


def _trainable_copy(model: str | Subject) -> Subject:
    """A freshly loaded Subject the caller does not hold: the spec loaded again, or a Subject's
    weights written to a temporary folder and loaded from there."""
    if isinstance(model, str):
        return load_subject(model)
    with tempfile.TemporaryDirectory(prefix="remnant-unlearn-") as tmp:
        model.save(Path(tmp) / "model")
        copy = load_subject(str(Path(tmp) / "model"), name=model.name)
    return dataclasses.replace(copy, source=model.source)


def _retrain(
    model: str | Subject, target: Target, settings: ScoringSettings
) -> tuple[Subject, dict[str, Any]]:
    """Exact unlearning for the tiny synthetic model: the gold model trained without the forget
    set's people. Valid only for that model and the synthetic world's default target."""
    tiny = load_subject("tiny-synthetic")
    original = model if isinstance(model, Subject) else load_subject(model)
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
    gold = load_subject("tiny-synthetic-gold")
    before, after = accuracies(original, target, settings), accuracies(gold, target, settings)
    hyperparameters = {"gold_model": "tiny-synthetic-gold", "excluded": list(world.forget_entities)}
    source = original.identity()
    report = _report("retrain", hyperparameters, TinyConfig().seed, source, gold, target)
    report |= {
        "prompt_style": resolve_style(gold, settings.prompt_style),
        "training": None,
        "before": before,
        "after": after,
        "retain_scored_on_training_items": False,
    }
    return gold, report


def _report(
    method: str,
    hyperparameters: dict[str, Any],
    seed: int,
    source: dict[str, Any],
    unlearned: Subject,
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


def _pairs(before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
    return [
        (scores or {}).get("accuracy")
        for split in ("forget", "retain")
        for scores in (before[split], after[split])
    ]
