"""``remnant unlearn``: make an unlearned checkpoint with a reference method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from remnant.cli import options, render

Method = Literal["ga", "graddiff", "npo", "rmu", "retrain"]


def unlearn(
    model: options.ModelSpec,
    target: options.TargetPath,
    method: Annotated[
        Method, typer.Option(help="The method (retrain: tiny-synthetic and its target only).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the unlearned checkpoint.")],
    overwrite: options.Overwrite = False,
    format: options.FormatOption = None,
    prompt_style: options.PromptStyleOption = "auto",
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate.")] = None,
    epochs: Annotated[
        float | None, typer.Option(help="Maximum passes over the forget examples (the budget).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Maximum optimizer steps (replaces the --epochs budget).")
    ] = None,
    stop_fraction: Annotated[
        float | None,
        typer.Option(help="Stop once forget accuracy (checked each epoch) <= this x before."),
    ] = None,
    no_stop: Annotated[
        bool, typer.Option("--no-stop", help="No stop rule: run the whole budget.")
    ] = False,
    retain_holdout: Annotated[
        float | None,
        typer.Option(help="Fraction of retain items held out of training and scored instead."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Forget examples per step.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of data order, retain split, LoRA init, RMU vector.")
    ] = None,
    layers: Annotated[
        str | None, typer.Option(help="Comma-separated decoder layers to train.")
    ] = None,
    modules: Annotated[
        str | None, typer.Option(help="Comma-separated name fragments of trained weights.")
    ] = None,
    lora_rank: Annotated[
        int | None, typer.Option(help="0: full fine-tuning; r > 0: rank-r LoRA, merged.")
    ] = None,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA alpha (scale alpha / r).")] = None,
    passages: Annotated[
        bool | None, typer.Option("--passages/--no-passages", help="Also train on passages.")
    ] = None,
    beta: Annotated[float | None, typer.Option(help="NPO inverse temperature.")] = None,
    retain_weight: Annotated[
        float | None, typer.Option(help="GradDiff/NPO weight of the retain NLL.")
    ] = None,
    layer: Annotated[
        int | None, typer.Option(help="RMU: the layer whose activations are misdirected.")
    ] = None,
    steering_coeff: Annotated[
        float | None, typer.Option(help="RMU: scale c of the random direction.")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="RMU: weight of the retain activation term.")
    ] = None,
) -> None:
    """Make an unlearned checkpoint with a reference method.

    The input model is never modified. Hyperparameters left out keep the method's preset for
    the model."""
    from remnant.targets import load_target
    from remnant.unlearning import UnlearningSettings
    from remnant.unlearning.unlearn import run

    chosen = dict(
        lr=lr, epochs=epochs, steps=steps, stop_fraction=stop_fraction,
        retain_holdout=retain_holdout, batch_size=batch_size, seed=seed, layers=layers,
        modules=modules, lora_rank=lora_rank, lora_alpha=lora_alpha, passages=passages,
        beta=beta, retain_weight=retain_weight, layer=layer, steering_coeff=steering_coeff,
        alpha=alpha,
    )  # fmt: skip
    settings = UnlearningSettings(
        method=method,
        overrides={name: value for name, value in chosen.items() if value is not None},
        stop_rule=not no_stop,
        prompt_style=prompt_style,
    )
    result = run(
        model, load_target(target, format), settings, out=out, overwrite=overwrite, progress=True
    )
    render.unlearning(result)
