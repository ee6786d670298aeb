"""``remnant eval``: behavioural scores of one model on a target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from remnant.cli import options, render


def evaluate(
    model: options.ModelSpec,
    target: options.TargetPath,
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the scores as JSON here.")
    ] = None,
    adapter: options.AdapterOption = None,
    prompt_style: options.PromptStyleOption = "auto",
    batch_size: options.BatchSize = 16,
    max_new_tokens: options.MaxNewTokens = 32,
    seed: options.Seed = 0,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Score a model on a target's forget and retain items (and multiple-choice items)."""
    from remnant.scoring import ScoringSettings
    from remnant.scoring import evaluate as run

    settings = ScoringSettings(
        prompt_style=prompt_style, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed
    )
    loaded = options.load(model, adapter=adapter, device=device, dtype=dtype)
    result = run(
        loaded, options.load_target_for(target, format, loaded, settings, concept), settings
    )
    render.evaluation(result)
    if json_out is not None:
        result.save(json_out)
        render.wrote(json_out)
