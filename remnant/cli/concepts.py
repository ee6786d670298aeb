"""``remnant concepts`` and ``remnant ablate``: concept vectors in the MLP weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from remnant.cli import options, render
from remnant.errors import RemnantError

Mode = Literal["zero", "noise", "project"]
ModeOption = Annotated[Mode, typer.Option(help="The intervention: zero, noise or project.")]
SigmaOption = Annotated[float, typer.Option(help="Noise standard deviation (--mode noise).")]


def concepts(
    model: options.ModelSpec,
    target: options.TargetPath,
    out: options.OutDir,
    unlearned: Annotated[
        list[str],
        typer.Option("--unlearned", "-u", help="Unlearned model(s) to compare with (repeat)."),
    ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    candidates: Annotated[int, typer.Option(min=1, help="Top located vectors to validate.")] = 10,
    random: Annotated[
        int, typer.Option(min=20, help="Random value vectors as the reference.")
    ] = 100,
    method: Annotated[
        Literal["projection", "attribution"],
        typer.Option("--locate", help="How vectors are ranked: projection or attribution."),
    ] = "projection",
    mode: ModeOption = "zero",
    sigma: SigmaOption = 0.1,
    prompt_style: options.PromptStyleOption = "auto",
    seed: options.Seed = 0,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Concept vectors: locate, validate causally, compare with unlearned models.

    Value vectors are located by vocabulary projection (or by attribution: the estimated effect
    of zeroing each on the forget answers, read on half the items), validated by ablation
    against random vectors (on the items the ranking did not read), and compared with the same
    vectors of each unlearned model."""
    from remnant.concept_vectors import CompareSettings, ValidateSettings, compare, locate, validate
    from remnant.concept_vectors.locate import LocateSettings
    from remnant.reports.figures.concept_vectors import (
        comparison,
        located_by_layer,
        validation_drops,
    )

    settings = ValidateSettings(
        n_candidates=candidates, mode=mode, sigma=sigma, n_random=random, seed=seed,
        prompt_style=prompt_style, locate=LocateSettings(method=method, seed=seed),
    )  # fmt: skip
    loaded = options.load(model, device=device, dtype=dtype)
    chosen = options.load_target_for(target, format, loaded, settings, concept)
    located = locate.run(loaded, chosen, settings.locate, prompt_style=prompt_style)
    render.save(out, "locate", located, located_by_layer(located))
    checked = validate.run(loaded, chosen, settings, located=located)
    render.save(out, "validate", checked, validation_drops(checked))
    render.validation(checked)
    vectors, signs = checked.comparison_vectors()
    for k, spec in enumerate(unlearned):
        other = options.load(spec, device=device, dtype=dtype)
        compared = compare.run(
            loaded, other, chosen, CompareSettings(), vectors=vectors, signs=signs
        )
        render.save(out, f"compare{k}", compared, comparison(compared))
        render.comparison(compared)


def ablate(
    model: options.ModelSpec,
    target: options.TargetPath,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the ablated checkpoint.")],
    vectors: Annotated[
        int | None,
        typer.Option(
            "--vectors",
            min=1,
            help="Ablate the N top-ranked located vectors (ranked by vocabulary projection, not "
            "causally validated).",
        ),
    ] = None,
    layer: Annotated[
        list[int],
        typer.Option("--layer", help="Layer of a vector to ablate (repeat, with --index)."),
    ] = [],  # noqa: B006
    index: Annotated[
        list[int], typer.Option("--index", help="Neuron index of that vector (repeat).")
    ] = [],  # noqa: B006
    mode: ModeOption = "zero",
    sigma: SigmaOption = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    adapter: options.AdapterOption = None,
    prompt_style: options.PromptStyleOption = "auto",
    batch_size: options.BatchSize = 16,
    max_new_tokens: options.MaxNewTokens = 32,
    overwrite: options.Overwrite = False,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Ablate concept vectors into a new checkpoint and report what it removed.

    The input model is never modified."""
    from remnant.concept_vectors import AblateSettings, ablate
    from remnant.io import check_output_free

    if len(layer) != len(index):
        raise RemnantError("give --layer and --index in pairs, one of each per vector")
    check_output_free(out, overwrite)
    settings = AblateSettings(
        vectors=tuple(zip(layer, index, strict=True)) or None, n_vectors=vectors, mode=mode,
        sigma=sigma, seed=seed, prompt_style=prompt_style, batch_size=batch_size,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    loaded = options.load(model, adapter=adapter, device=device, dtype=dtype)
    chosen = options.load_target_for(target, format, loaded, settings, concept)
    result = ablate.run(loaded, chosen, settings, out=out, overwrite=overwrite)
    render.ablation(result)
