"""``remnant attack``: attacks that try to bring forgotten knowledge back, each scored on
held-out forget items beside the original (and a gold) model."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from remnant.cli import options, render
from remnant.errors import RemnantError

if TYPE_CHECKING:
    from remnant.results import Result
    from remnant.settings import Settings

#: Attack name -> (its module, the name of its settings class there), in the default order.
ATTACKS: dict[str, tuple[str, str]] = {
    "in_context": ("remnant.attacks.in_context", "InContextSettings"),
    "reasoning": ("remnant.attacks.reasoning", "ReasoningSettings"),
    "variants": ("remnant.attacks.variants", "VariantSettings"),
    "mia": ("remnant.attacks.mia", "MIASettings"),
    "relearn": ("remnant.attacks.relearn", "RelearnSettings"),
    "embedding": ("remnant.attacks.embedding", "EmbeddingSettings"),
    "quantize": ("remnant.attacks.quantize", "QuantizeSettings"),
}


def attack(
    original: options.OriginalSpec = None,
    base: options.BaseAlias = None,
    unlearned: options.UnlearnedSpec = ...,
    gold: options.GoldSpec = None,
    target: options.TargetPath = ...,
    out: options.OutDir = ...,
    attacks: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated attacks, run in the order given: {', '.join(ATTACKS)}."
        ),
    ] = ",".join(ATTACKS),
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    held_out_fraction: Annotated[
        float,
        typer.Option(
            help="Least fraction of the forget items held out for scoring (whole entities are "
            "held out; attacks may show the model only the rest)."
        ),
    ] = 0.5,
    shots: Annotated[
        str | None,
        typer.Option(
            help="in_context: comma-separated numbers k of fit-split demonstrations, the points "
            "of the k-shot curve (default: the attack's)."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="relearn: optimizer steps per relearning curve."),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(min=0.0, help="relearn: learning rate of the curves.")
    ] = None,
    lora_rank: Annotated[
        int | None,
        typer.Option(min=0, help="relearn: LoRA rank (0: fine-tune the weights themselves)."),
    ] = None,
    rtt_rounds: Annotated[
        int | None,
        typer.Option(
            min=0, help="relearn: folds held out in turn by retraining on T (0: skip it)."
        ),
    ] = None,
    soft_iterations: Annotated[
        int | None,
        typer.Option(min=1, help="embedding: signed-gradient iterations of the soft prompt."),
    ] = None,
    soft_tokens: Annotated[
        int | None,
        typer.Option(min=0, help="embedding: soft-prompt vectors (0: no soft prompt)."),
    ] = None,
    n_samples: Annotated[
        int | None, typer.Option(min=1, help="embedding: noise draws per item and scale.")
    ] = None,
    bits: Annotated[
        str | None,
        typer.Option(help="quantize: comma-separated bit widths (default: 8,4)."),
    ] = None,
    group_size: Annotated[
        int | None,
        typer.Option(min=1, help="quantize: input weights sharing one scale (default 128)."),
    ] = None,
    prompt_style: options.PromptStyleOption = "auto",
    batch_size: options.BatchSize = 16,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Greedy generation length in tokens (default: each attack's)."),
    ] = None,
    seed: options.Seed = 0,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Attacks on the unlearned model: does forgotten knowledge come back?

    Each attack is scored on held-out forget items on the original, the unlearned and (when
    given) a gold model, with the gap recovery of the unlearned model and 95% CIs."""
    from remnant.settings import ScoringSettings

    chosen = _attack_names(attacks)
    shared = {
        "held_out_fraction": held_out_fraction, "prompt_style": prompt_style,
        "batch_size": batch_size, "max_new_tokens": max_new_tokens, "seed": seed,
        "shots": None if shots is None else _integers("--shots", shots),
        "steps": steps, "lr": lr, "lora_rank": lora_rank, "rtt_rounds": rtt_rounds,
        "soft_iterations": soft_iterations, "soft_tokens": soft_tokens, "n_samples": n_samples,
        "bits": None if bits is None else _integers("--bits", bits), "group_size": group_size,
    }  # fmt: skip
    modules = {name: importlib.import_module(ATTACKS[name][0]) for name in chosen}
    settings = {
        name: _settings(getattr(modules[name], ATTACKS[name][1]), shared) for name in chosen
    }
    first = options.load(options.original_spec(original, base), device=device, dtype=dtype)
    second = options.load(unlearned, device=device, dtype=dtype)
    control = None if gold is None else options.load(gold, device=device, dtype=dtype)
    loaded = options.load_target_for(
        target, format, first, _settings(ScoringSettings, shared), concept
    )
    for name in chosen:
        result = modules[name].run(
            first, second, loaded, settings[name], gold=control, progress=True
        )
        _report(out, name, result)


def _attack_names(text: str) -> list[str]:
    """The attacks ``--attacks`` names, in order, each once; unknown names raise."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in ATTACKS]
    if unknown or not names:
        raise RemnantError(
            f"unknown attack(s) {', '.join(map(repr, unknown)) or 'none given'}: --attacks takes "
            f"comma-separated names from {', '.join(ATTACKS)}"
        )
    return names


def _integers(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise RemnantError(f"{option} takes comma-separated integers, not {text!r}") from None


def _settings(cls: type[Settings], shared: dict[str, Any]) -> Settings:
    """``cls`` made from the shared options it has a field for (its own defaults where an
    option was not given)."""
    fields = {field.name for field in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in shared.items() if k in fields and v is not None})


def _report(out: Path, name: str, result: Result) -> None:
    """Save ``result`` as ``attack-{name}.json`` with its figures, and print its table."""
    from remnant.reports.figures import attacks as figures
    from remnant.reports.files import save_figure

    if result.kind == "mia":
        from remnant.reports.figures.mia import mia_roc

        render.save(out, f"attack-{name}", result, mia_roc(result))
        render.mia(result)
        return
    if result.kind == "relearn":
        render.save(out, f"attack-{name}", result, figures.relearn_curves(result))
        render.relearn(result)
        return
    if result.kind == "quantize":
        render.save(out, f"attack-{name}", result, figures.quantize_bars(result))
        render.quantize(result)
        return
    if result.kind == "embedding":
        render.save(out, f"attack-{name}", result)
        if result.noise is not None:
            render.wrote(
                save_figure(out / f"attack-{name}-noise.png", figures.noise_curves(result))
            )
        if result.soft_prompt is not None:
            path = out / f"attack-{name}-soft-prompt.png"
            render.wrote(save_figure(path, figures.soft_prompt_bars(result)))
        render.embedding(result)
        return

    render.save(out, f"attack-{name}", result, figures.attack_bars(result))
    if name == "in_context":
        render.wrote(save_figure(out / f"attack-{name}-k.png", figures.k_shot_curve(result)))
    render.attack(result)
