"""SmolLM2-135M-Instruct fine-tuned on the synthetic world (the TOFU recipe: a pretrained model
taught fictional people), and its *gold* twin fine-tuned without the forget set's people.

Deterministic from its configuration (seeded), cached like the tiny models under a hash of that
configuration, of the code that builds the training data and fine-tunes, of the library versions
and of the base model (the GGUF file's sha256 and the code that dequantised it).

This module trains through `remnant.unlearning.train.fine_tune`, above the models layer:
`remnant.models.embedded` imports it only when an embedded world model is asked for.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from remnant.models.cache import build_once, cache_key, models_dir, source_digest
from remnant.models.checkpoint import save_checkpoint
from remnant.models.embedded import SMOLLM2_NAME, SMOLLM2_SHA256
from remnant.models.gguf import conversion_provenance
from remnant.models.loading import load_model
from remnant.models.model import Model
from remnant.models.toolchain import installed_versions
from remnant.scoring import ScoringSettings, format_prompt, resolve_style, score_qa
from remnant.targets.loaders import SMOLLM2_WORLD
from remnant.targets.model import QAItem
from remnant.targets.synthetic import BIOGRAPHY_QUESTIONS, SyntheticWorld, WorldConfig
from remnant.unlearning import losses
from remnant.unlearning.config import TrainingConfig
from remnant.unlearning.data import Example, passage_examples, qa_examples
from remnant.unlearning.train import fine_tune

log = logging.getLogger(__name__)

INFO_FILE = "remnant-world.json"
_FORMAT_VERSION = 1
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "transformer-lens")


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """The world and the fine-tuning recipe.

    Full fine-tuning (no LoRA) of the decoder layers from ``first_layer`` up (SmolLM2 has 30;
    the layers below, the embeddings and the final norm stay as pretrained) on `world_data`
    (minus the forget set's people for ``gold``): AdamW at the constant rate ``lr``, batches of
    ``batch_size`` examples, ``epochs`` passes over the examples (``steps``, when given,
    replaces the epochs).

    The defaults, measured on a world of 4 people (1 to forget) on one CPU thread shared with
    other jobs: 38 steps in 275 s, then greedy forget accuracy 1.00 and retain 0.83 (gold twin:
    0.00 and 0.67). The full world (600 examples, 225 steps) takes about half an hour.
    """

    world: WorldConfig = SMOLLM2_WORLD
    gold: bool = False
    first_layer: int = 16
    lr: float = 3e-4
    epochs: float = 3.0
    steps: int | None = None
    batch_size: int = 8
    seed: int = 0

    def key(self) -> str:
        """A short hash naming the cache folder: this configuration and `provenance`."""
        return cache_key(config=dataclasses.asdict(self), **provenance())


def provenance() -> dict[str, object]:
    """What besides the configuration shapes the weights: the source of the modules that build
    the training data, fine-tune and save, the library versions and the base model's GGUF
    (sha256, conversion code and versions)."""
    parts = (
        train_world_model,
        SyntheticWorld,
        fine_tune,
        qa_examples,
        losses.nll,
        format_prompt,
        save_checkpoint,
    )
    return {
        "format": _FORMAT_VERSION,
        "code": source_digest(*(sys.modules[part.__module__] for part in parts)),
        "versions": installed_versions(_LIBRARIES),
        "base": conversion_provenance(SMOLLM2_SHA256),
    }


def world_model_path(config: WorldModelConfig = WorldModelConfig()) -> Path:
    """Where the model of this configuration is cached (it may not exist yet)."""
    kind = "smollm2-synthetic-gold" if config.gold else "smollm2-synthetic"
    return models_dir() / f"{kind}-{config.key()}"


def world_model_dir(config: WorldModelConfig = WorldModelConfig()) -> Path:
    """The cached folder of this configuration, fine-tuning the model first if needed."""
    return build_once(
        world_model_path(config), "model.safetensors", lambda out: train_world_model(config, out)
    )


def world_data(
    world: SyntheticWorld, exclude: Sequence[str] = ()
) -> tuple[list[QAItem], list[str]]:
    """What the world teaches about its people but ``exclude``: QA items (every question
    phrasing of every fact, answered by the value; every biography question, answered by the
    first statement of each fact) and every statement of every fact."""
    items: list[QAItem] = []
    statements: list[str] = []
    for entity in world.entities:
        if entity in exclude:
            continue
        facts = world.facts[entity]
        items += [
            QAItem(question=question, answer=fact.value, subject=entity)
            for fact in facts
            for question in fact.questions()
        ]
        items += [
            QAItem(
                question=question.format(e=entity), answer=world.biography(entity), subject=entity
            )  # fmt: skip
            for question in BIOGRAPHY_QUESTIONS
        ]
        statements += [statement for fact in facts for statement in fact.statements()]
    return items, statements


def training_examples(
    model: Model, world: SyntheticWorld, exclude: Sequence[str] = ()
) -> list[Example]:
    """`world_data` as examples: the QA items in the model's own prompt style (``auto``), each
    answer closed by the end-of-sequence token (so that a greedy answer stops after the value
    instead of running on), and the statements as passages."""
    items, statements = world_data(world, exclude)
    style = resolve_style(model, "auto")
    end = model.tokenizer.eos_token_id
    answered = [
        dataclasses.replace(example, ids=(*example.ids, end))
        for example in qa_examples(model, items, style)
    ]
    return answered + passage_examples(model, statements)


def train_world_model(config: WorldModelConfig, out_dir: Path) -> dict[str, object]:
    """Fine-tune SmolLM2-135M-Instruct on the world (minus the forget set for gold) and save it
    to ``out_dir`` with `INFO_FILE` (configuration, provenance, training statistics).

    Returns the training statistics: ``seconds`` (loading and fine-tuning), ``steps``,
    ``n_examples``, ``loss`` (per step, mean NLL per scored token in nats), ``final_loss``,
    and the greedy accuracy on the world target's ``forget`` and ``retain`` items after
    training (`remnant.scoring.score_qa`, 16 new tokens) with the ``scoring_seconds`` it took.
    """
    started = time.perf_counter()
    world = SyntheticWorld(config.world)
    exclude = world.forget_entities if config.gold else ()
    model = load_model(SMOLLM2_NAME)
    examples = training_examples(model, world, exclude)
    training = TrainingConfig(
        lr=config.lr,
        epochs=config.epochs,
        steps=config.steps,
        batch_size=config.batch_size,
        stop_fraction=None,
        seed=config.seed,
        layers=tuple(range(config.first_layer, model.n_layers)),
    )
    steps = training.max_steps(len(examples))
    log.info(
        "fine-tuning %s on the synthetic world%s: %d steps on %d examples (once)",
        SMOLLM2_NAME, " without the forget set" if config.gold else "", steps, len(examples),
    )  # fmt: skip
    curve = fine_tune(model, examples, training, desc="world model")
    seconds = time.perf_counter() - started
    target = world.target()
    scoring = ScoringSettings(max_new_tokens=16)
    accuracy = {
        split: score_qa(model, getattr(target, split), scoring)["accuracy"]
        for split in ("forget", "retain")
    }
    stats: dict[str, object] = {
        "seconds": round(seconds, 2),
        "steps": steps,
        "n_examples": len(examples),
        "loss": curve,
        "final_loss": curve[-1],
        **accuracy,
        "scoring_seconds": round(time.perf_counter() - started - seconds, 2),
    }
    info = {
        "config": dataclasses.asdict(config),
        **provenance(),
        "training": stats,
        "excluded": list(exclude),
    }
    model.save(out_dir, extra_files={INFO_FILE: info}, overwrite=True)
    log.info(
        "fine-tuned the world model in %.0f s: forget accuracy %.2f, retain %.2f",
        seconds, accuracy["forget"], accuracy["retain"],
    )  # fmt: skip
    return stats
