"""``remnant probe``: linear probes and the logit lens, original against unlearned."""

from __future__ import annotations

from typing import Annotated

import typer

from remnant.cli import options, render


def probe(
    original: options.OriginalSpec = None,
    base: options.BaseAlias = None,
    unlearned: options.UnlearnedSpec = ...,
    target: options.TargetPath = ...,
    out: options.OutDir = ...,
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated probe tasks: truth, recall, mcq, concept (default: all)."
        ),
    ] = None,
    folds: Annotated[
        int, typer.Option(min=2, help="Cross-validation folds (grouped by item).")
    ] = 5,
    prompt_style: options.PromptStyleOption = "auto",
    batch_size: options.BatchSize = 16,
    seed: options.Seed = 0,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Linear probes and the logit lens: can the forgotten answers still be read out?

    Per-layer probes on the residual stream (with control tasks), and the logit lens at the
    token before each forget answer, on the original and the unlearned model."""
    from remnant.probes import lens, linear
    from remnant.reports.figures.probes import lens_ranks, probe_accuracy

    settings = linear.ProbeSettings(
        tasks=tuple(t.strip() for t in tasks.split(",")) if tasks else None,
        folds=folds, prompt_style=prompt_style, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    first = options.load(options.original_spec(original, base), device=device, dtype=dtype)
    second = options.load(unlearned, device=device, dtype=dtype)
    loaded = options.load_target_for(target, format, first, settings, concept)
    probes = linear.run(first, second, loaded, settings)
    render.save(out, "probes", probes, probe_accuracy(probes))
    render.probes(probes)
    if loaded.forget:
        readout = lens.run(
            first,
            second,
            loaded,
            lens.LensSettings(prompt_style=prompt_style, batch_size=batch_size),
        )
        render.save(out, "lens", readout, lens_ranks(readout))
        render.lens(readout)
