"""`run`: make an unlearned checkpoint with a reference method and measure what it forgot."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from remnant.errors import RetrainUnavailableError, SettingsError, UnlearningError
from remnant.io import check_output_free
from remnant.models import Model, load_copy, load_model
from remnant.models.cache import build_once, cache_key, remnant_home, source_digest
from remnant.models.tiny import TinyConfig
from remnant.results import Result
from remnant.scoring import ScoringSettings, accuracy_change, resolve_style, score_qa, split_scores
from remnant.settings import Constraint, InstanceOf, OneOf, require
from remnant.targets import QAItem, Target
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnlearningSettings(ScoringSettings):
    """Which method unlearns, with which hyperparameters; the scoring fields score the forget
    and held-out retain items before and after (and the stop rule's checks). The training seed
    (data order, retain split, LoRA init, RMU's vector) is the hyperparameter ``seed`` of the
    config (``overrides={"seed": 3}``), not the scoring ``seed``."""

    constraints: ClassVar[Mapping[str, Constraint]] = {
        "method": OneOf(METHODS),
        "overrides": InstanceOf(dict),
        "stop_rule": InstanceOf(bool),
    }

    method: str
    """The method: ga, graddiff, npo, rmu, or retrain (the tiny synthetic model only: its gold
    twin, exact unlearning)."""
    config: TrainingConfig | None = None
    """The method's hyperparameters (a `GAConfig`, `GradDiffConfig`, `NPOConfig` or
    `RMUConfig`); None: the method's preset for the model (`default_config`)."""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Single hyperparameters replacing the config's, by name (a None value is a value: e.g.
    ``steps=None``). ``layers`` and ``modules`` may be comma-separated text, as typed on a
    command line (``"24,25"``)."""
    stop_rule: bool = True
    """False: ``stop_fraction`` is None (run the whole budget); giving a stop fraction in
    ``overrides`` as well is refused."""

    def check(self) -> None:
        if self.method == "retrain":
            require(
                self.config is None and not self.overrides,
                "retrain has no hyperparameters: it loads the gold model",
            )
            return
        kind = config_class(self.method)
        require(
            self.config is None or isinstance(self.config, kind),
            f"{self.method} needs a {kind.__name__}, not {type(self.config).__name__}",
        )
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(self.overrides) - names)
        require(
            not unknown,
            f"{kind.__name__} has no hyperparameter {', '.join(unknown)}; "
            f"it has: {', '.join(sorted(names))}",
        )
        require(
            self.stop_rule or self.overrides.get("stop_fraction") is None,
            "give a stop fraction or turn the stop rule off, not both",
        )
        self.hyperparameters()

    def hyperparameters(self) -> dict[str, Any]:
        """The overrides to apply: ``layers`` / ``modules`` text parsed, and ``stop_fraction``
        None when the stop rule is off."""
        chosen = {name: _parse_list(name, value) for name, value in self.overrides.items()}
        if not self.stop_rule:
            chosen["stop_fraction"] = None
        return chosen


@dataclasses.dataclass(frozen=True)
class UnlearningResult(Result):
    """What an unlearning run did and what it forgot (also written beside the checkpoint as
    ``remnant-unlearning.json``)."""

    kind = "unlearning"

    method: str
    """The method: ga, graddiff, npo, rmu or retrain."""
    hyperparameters: dict[str, Any]
    """Every hyperparameter of the config trained with (for retrain: the gold model and the
    entities it never saw)."""
    seed: int
    """The training seed (data order, retain split, LoRA init, RMU's vector)."""
    source_model: dict[str, Any]
    """Identity of the model unlearning started from (name, source, content hash, shape)."""
    output: str
    """The folder the unlearned checkpoint was written to."""
    output_content_hash: str
    """Content hash of the written (unlearned) weights."""
    target: dict[str, Any]
    """The target's name and its numbers of forget and retain items."""
    prompt_style: str
    """The prompt style the items were trained on and scored in (``auto`` resolved)."""
    retain_split: dict[str, Any]
    """Which retain items (indices into the target's) were trained on and which held out and
    scored: holdout fraction, seed, counts, the two index lists, and how many held-out facts
    the unrelated passages a retain term trained on state (``n_held_out_stated_in_passages``)."""
    retain_scored_on: str
    """What the reported retain accuracy is measured on, in words."""
    training: dict[str, Any] | None
    """What training did (`remnant.unlearning.train.train`): wall and CPU seconds, the step
    budget and the steps and epochs taken, the stop rule and its checks, trained parameters and
    layers, example counts and the loss terms per step. None for retrain."""
    before: dict[str, Any]
    """Scores of the original model (`remnant.scoring.split_scores`): per split (forget, held-out
    retain; None when empty) the number of items, greedy accuracy (alias match), accuracy over
    answered items and mean answer log-probability (nats, summed over answer tokens); and the
    ``seconds`` the scoring took."""
    after: dict[str, Any]
    """The same scores of the unlearned model. When the stop rule's last check scored the final
    weights, its forget scores are reused (no second generation pass)."""
    settings: dict[str, Any]
    """The `UnlearningSettings` asked for (prompt style resolved)."""

    def summary(self) -> dict[str, Any]:
        """Greedy accuracy before and after per split with items, and the optimizer steps
        taken (None for retrain)."""
        out: dict[str, Any] = accuracy_change(self.before, self.after)
        out["steps"] = self.training["steps"] if self.training is not None else None
        return out


def run(
    model: Model | str,
    target: Target,
    settings: UnlearningSettings,
    *,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    progress: bool = False,
) -> UnlearningResult:
    """Unlearn ``target`` from ``model`` with ``settings.method`` and write the checkpoint to
    ``out`` with `UnlearningResult.to_dict` as ``remnant-unlearning.json`` beside the weights.

    ``model`` is a spec (loaded afresh and trained) or a `Model`, which is never modified: it is
    copied first (`remnant.models.load_copy`). ``out`` is refused if it exists, before any work,
    unless ``overwrite``. Training data come from the target (forget QA in the model's prompt
    style and forget passages; the trained part of a seeded retain split and unrelated
    passages). Training runs up to the config's step budget and stops early once greedy forget
    accuracy falls to ``stop_fraction`` of its value before (see `remnant.unlearning.config`).
    Greedy accuracy (alias match) before and after is scored with ``settings`` on all forget
    items and on the held-out retain items only. ``progress`` shows a progress bar.
    """
    check_output_free(out, overwrite)
    if settings.method == "retrain":
        gold, result = _retrain(model, target, settings, out)
        gold.save(Path(out), extra_files={REPORT_FILE: result.to_dict()}, overwrite=overwrite)
        return result
    method = settings.method
    trainee = load_model(model) if isinstance(model, str) else load_copy(model)
    source = trainee.identity()
    config = with_overrides(
        settings.config or default_config(method, trainee.name), settings.hyperparameters()
    )
    style = resolve_style(trainee, settings.prompt_style)
    trained, held_out = split_retain(len(target.retain), config.retain_holdout, config.seed)
    forget, retain = build_examples(
        trainee, target, style, config.passages, [target.retain[i] for i in trained]
    )
    if not forget:
        raise UnlearningError(f"target {target.name!r} has no forget items or passages to train on")
    log.info("%s: unlearning %r from %s (%s)", method, target.name, trainee.name, config)
    scored_retain = [target.retain[i] for i in held_out]
    before = split_scores(trainee, target, settings, retain_items=scored_retain)

    last_check: dict[str, Any] = {}

    def forget_accuracy() -> float:
        """The stop rule's check: greedy accuracy on all forget QA items, as reported."""
        last_check["forget"] = score_qa(trainee, target.forget, settings)
        return last_check["forget"]["accuracy"]

    training = train(
        trainee,
        config,
        forget,
        retain,
        forget_accuracy=forget_accuracy if target.forget else None,
        accuracy_before=before["forget"] and before["forget"]["accuracy"],
        progress=progress,
    )
    # the stop rule's last check scored the final weights, unless LoRA adapters were merged since
    final_check = None if config.lora_rank else last_check.get("forget")
    after = split_scores(
        trainee, target, settings, retain_items=scored_retain, forget_scores=final_check
    )
    passages = (
        target.unrelated_passages if config.passages and training["n_retain_examples"] else []
    )
    split = _split_record(trained, held_out, config.retain_holdout, config.seed)
    split["n_held_out_stated_in_passages"] = _stated_in(scored_retain, passages)
    result = UnlearningResult(
        method=method,
        hyperparameters=json.loads(json.dumps(dataclasses.asdict(config))),
        seed=config.seed,
        source_model=source,
        output=str(out),
        output_content_hash=trainee.content_hash,
        target=_target_record(target),
        prompt_style=style,
        retain_split=split,
        retain_scored_on=_scored_on(split, len(target.retain)),
        training=training,
        before=before,
        after=after,
        settings=settings.record(prompt_style=style),
    )
    log.info("%s: forget accuracy %s -> %s, retain %s -> %s", method, *_pairs(before, after))
    trainee.save(Path(out), extra_files={REPORT_FILE: result.to_dict()}, overwrite=overwrite)
    return result


def cached_run(
    model: Model, target: Target, settings: UnlearningSettings, *, progress: bool = False
) -> Path:
    """The checkpoint of `run` on ``model``, ``target`` and ``settings``, made once and kept
    under ``$REMNANT_HOME/checkpoints`` in a folder keyed by the model's content hash, the target,
    the settings, the unlearning code and the code of the stop rule's greedy check (prompts,
    decoding, judging; concurrent callers build it once)."""
    from remnant.models import decoder
    from remnant.scoring import batching, generation, matching, prompts, qa
    from remnant.unlearning import config, data, losses, train

    check = (qa, matching, prompts, generation, batching, decoder)
    key = cache_key(
        model=model.content_hash,
        target=target.model_dump(mode="json"),
        settings=settings.record(),
        code=source_digest(sys.modules[__name__], train, losses, data, config, *check),
    )
    folder = f"{model.name}-{target.name}-{settings.method}-{key}"
    return build_once(
        remnant_home() / "checkpoints" / folder,
        REPORT_FILE,
        lambda out: run(model, target, settings, out=out, overwrite=True, progress=progress),
    )


def _parse_list(name: str, value: Any) -> Any:
    """``layers`` and ``modules`` may come from the command line as comma-separated text."""
    if name in ("layers", "modules") and isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return tuple(int(p) for p in parts) if name == "layers" else tuple(parts)
        except ValueError:
            raise SettingsError(f"layers must be comma-separated integers, not {value!r}") from None
    return value


def _retrain(
    model: str | Model, target: Target, settings: UnlearningSettings, out: str | os.PathLike[str]
) -> tuple[Model, UnlearningResult]:
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
    before = split_scores(original, target, settings, retain_items=scored_retain)
    after = split_scores(gold, target, settings, retain_items=scored_retain)
    split = _split_record(trained, held_out, defaults.retain_holdout, defaults.seed)
    split["n_held_out_stated_in_passages"] = 0  # the gold model trained on no retain term
    hyperparameters = {"gold_model": "tiny-synthetic-gold", "excluded": list(world.forget_entities)}
    style = resolve_style(gold, settings.prompt_style)
    result = UnlearningResult(
        method="retrain",
        hyperparameters=hyperparameters,
        seed=TinyConfig().seed,
        source_model=original.identity(),
        output=str(out),
        output_content_hash=gold.content_hash,
        target=_target_record(target),
        prompt_style=style,
        retain_split=split,
        retain_scored_on=_scored_on(split, len(target.retain)),
        training=None,
        before=before,
        after=after,
        settings=settings.record(prompt_style=style),
    )
    return gold, result


def _target_record(target: Target) -> dict[str, Any]:
    return {"name": target.name, "n_forget": len(target.forget), "n_retain": len(target.retain)}


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
