"""``remnant trace`` and ``remnant diff``: which layers carry a fact, and where unlearning acted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from remnant.cli import options, render

TraceMethod = Annotated[
    Literal["exact", "attribution"],
    typer.Option(
        help="exact: run every patch; attribution: estimate them all from one forward and "
        "backward pass per fact (first order)."
    ),
]
DiffMethod = Annotated[
    Literal["exact", "attribution", "screen"],
    typer.Option(
        help="exact: run every patch; attribution: estimate them all from one forward and "
        "backward pass per fact (first order); screen: estimate them all, then run the "
        "last-token and block-output patches and, for MLP and attention, the all-position "
        "patches at the layers of largest estimated effect plus a random sample of the others."
    ),
]
MaxFacts = Annotated[int | None, typer.Option(min=1, help="Use at most this many known facts.")]


def trace(
    model: options.ModelSpec,
    target: options.TargetPath,
    out: options.OutDir,
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    samples: Annotated[int, typer.Option(min=1, help="Noise samples per fact.")] = 10,
    noise: Annotated[
        float, typer.Option(min=0, help="Noise std as a multiple of the subject embeddings' std.")
    ] = 3.0,
    window: Annotated[
        int, typer.Option(min=1, help="Layers restored together for MLP / attention.")
    ] = 10,
    max_facts: MaxFacts = None,
    method: TraceMethod = "exact",
    context: options.ContextOption = "generation",
    figures: Annotated[int, typer.Option(min=0, help="Per-fact heatmap figures to draw.")] = 5,
    prompt_style: options.PromptStyleOption = "auto",
    batch_size: options.PatchBatchSize = 64,
    seed: options.Seed = 0,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Causal tracing: which layers and tokens carry the forget facts the model knows."""
    from remnant.reports.figures.tracing import trace_average, trace_heatmaps
    from remnant.reports.files import save_figure
    from remnant.tracing import TraceSettings, causal_trace

    settings = TraceSettings(
        noise_multiplier=noise, n_samples=samples, window=window, seed=seed,
        batch_size=batch_size, max_facts=max_facts, prompt_style=prompt_style, context=context,
        method=method,
    )  # fmt: skip
    loaded = options.load(model, device=device, dtype=dtype)
    chosen = options.load_target_for(target, format, loaded, settings, concept)
    result = causal_trace.run(loaded, chosen, settings, progress=True)
    render.save(out, "trace", result, trace_average(result))
    for k in range(min(figures, len(result.facts))):
        render.wrote(save_figure(out / f"trace_fact{k:02d}.png", trace_heatmaps(result, k)))
    render.trace(result)


def diff(
    original: options.OriginalSpec = None,
    base: options.BaseAlias = None,
    unlearned: options.UnlearnedSpec = ...,
    target: options.TargetPath = ...,
    out: options.OutDir = ...,
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    method: DiffMethod = "exact",
    storing_from: Annotated[
        Path | None,
        typer.Option(help="trace.json from remnant trace on the original: its storing layers."),
    ] = None,
    max_facts: MaxFacts = None,
    context: options.ContextOption = "generation",
    prompt_style: options.PromptStyleOption = "auto",
    batch_size: options.PatchBatchSize = 64,
    seed: options.Seed = 0,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Cross-model patching: which layers of the original restore what unlearning removed."""
    from remnant.reports.figures.tracing import diff_curves
    from remnant.reports.files import save_figure
    from remnant.tracing import CausalTraceResult, DiffSettings, model_diff

    storing = None if storing_from is None else CausalTraceResult.load(storing_from).storing_layers
    settings = DiffSettings(
        batch_size=batch_size, max_facts=max_facts, seed=seed, prompt_style=prompt_style,
        context=context, method=method,
    )  # fmt: skip
    first = options.load(options.original_spec(original, base), device=device, dtype=dtype)
    second = options.load(unlearned, device=device, dtype=dtype)
    loaded = options.load_target_for(target, format, first, settings, concept)
    result = model_diff.run(first, second, loaded, settings, storing_layers=storing, progress=True)
    render.save(out, "diff", result, diff_curves(result, normalised=True))
    render.wrote(save_figure(out / "diff_prob.png", diff_curves(result, normalised=False)))
    render.diff(result)
