"""Options shared by several commands (declared once, choices checked by the parser), and the
loading of the models and targets they name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from remnant.errors import RemnantError
from remnant.settings import AnswerContextKind, PromptStyle

if TYPE_CHECKING:  # loading torch and transformers waits until a command needs them
    from remnant.models import Model
    from remnant.settings import ScoringSettings
    from remnant.targets import Target

TargetFormat = Literal["remnant", "tofu", "muse", "wmdp", "rwku", "conceptvectors"]
DType = Literal["float32", "bfloat16", "float16"]

_SPEC = "an embedded name, a Hugging Face folder, a Hub id or a .gguf file"

ModelSpec = Annotated[str, typer.Option("--model", "-m", help=f"The model: {_SPEC}.")]
OriginalSpec = Annotated[
    str | None,
    typer.Option("--original", help=f"The original model, before unlearning: {_SPEC}."),
]
#: ``--base``: the old name of ``--original``, kept (hidden) so that existing scripts run.
BaseAlias = Annotated[str | None, typer.Option("--base", "-b", hidden=True)]
UnlearnedSpec = Annotated[
    str, typer.Option("--unlearned", "-u", help=f"The unlearned model: {_SPEC}.")
]
GoldSpec = Annotated[
    str | None,
    typer.Option(
        "--gold", help=f"A gold model that never saw the forget data (the control): {_SPEC}."
    ),
]
TargetPath = Annotated[
    str,
    typer.Option(
        "--target",
        "-t",
        help="What should be forgotten: a remnant YAML/JSON target, a public-format file or "
        "folder, or a built-in name (demo, tiny-synthetic).",
    ),
]
FormatOption = Annotated[
    TargetFormat | None, typer.Option("--format", help="Target format (default: detected).")
]
ConceptOption = Annotated[
    str | None, typer.Option(help="ConceptVectors files: which concept to load.")
]
AdapterOption = Annotated[
    Path | None, typer.Option(help="A PEFT LoRA adapter folder merged on top of the model.")
]
PromptStyleOption = Annotated[
    PromptStyle,
    typer.Option(
        "--prompt-style",
        help="auto (the chat template when the tokenizer has one, else plain), chat, plain "
        "('Question: ... Answer:') or completion (the question text is the prefix itself).",
    ),
]
ContextOption = Annotated[
    AnswerContextKind,
    typer.Option(
        help="Read the answer where the (original) model states it in its greedy answer "
        "(generation) or right after the prompt (prompt).",
    ),
]
BatchSize = Annotated[int, typer.Option(min=1, help="Prompts per forward pass.")]
PatchBatchSize = Annotated[int, typer.Option(min=1, help="Patched rows per forward pass.")]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Greedy generation length in tokens.")]
Seed = Annotated[int, typer.Option(help="Seed of every random draw (and of the bootstrap).")]
DeviceOption = Annotated[str | None, typer.Option(help="torch device, e.g. cuda (default: cpu).")]
DTypeOption = Annotated[DType | None, typer.Option(help="Weights dtype (default: float32).")]
OutDir = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for the JSON results and the figures.")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]


def original_spec(original: str | None, base: str | None) -> str:
    """The original model's spec from ``--original`` or its old name ``--base``."""
    if original is not None and base is not None:
        raise RemnantError("give the original model once, with --original")
    spec = original if original is not None else base
    if spec is None:
        raise RemnantError("missing --original: the model before unlearning")
    return spec


def load(
    spec: str,
    *,
    adapter: Path | None = None,
    device: str | None = None,
    dtype: DType | None = None,
) -> Model:
    """The model ``spec`` names, loaded as the options ask."""
    import torch

    from remnant.models import load_model

    return load_model(
        spec, adapter=adapter, device=device, dtype=getattr(torch, dtype) if dtype else None
    )


def load_target_for(
    path: str,
    format: TargetFormat | None,
    model: Model,
    settings: ScoringSettings,
    concept: str | None = None,
) -> Target:
    """The target at ``path``; where the format has no reference answers (ConceptVectors),
    ``model``'s greedy answers in the prompts ``settings`` make become them."""
    from remnant.scoring import reference_answers
    from remnant.targets import load_target

    return load_target(
        path,
        format,
        concept=concept,
        answer_fn=lambda questions: reference_answers(model, questions, settings),
        answer_source=f"greedy output of {model.name} ({model.content_hash})",
    )
