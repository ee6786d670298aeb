"""The ``remnant`` command: a thin front-end over the Python API."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from remnant.errors import RemnantError
from remnant.results import write_text_atomic

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = typer.Option(
    ..., "--model", "-m", help="Embedded name, HF folder, Hub id or .gguf file."
)
TargetOpt = typer.Option(
    ..., "--target", "-t", help="Target file or folder, or a built-in name (demo)."
)
FormatOpt = typer.Option(None, "--format", help="Target format (default: detected).")
StyleOpt = typer.Option(
    "auto", "--prompt-style", help="auto (chat template if any), chat or plain."
)
DeviceOpt = typer.Option(None, "--device", help="torch device, e.g. cuda (default: cpu).")
DtypeOpt = typer.Option(None, "--dtype", help="float32 (default), bfloat16 or float16.")
DTYPES = ("float32", "bfloat16", "float16")


def _friendly(command: F) -> F:
    """Print a `RemnantError` as one message and exit with code 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _configure_logging()
        try:
            return command(*args, **kwargs)
        except RemnantError as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _configure_logging() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "transformer_lens"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
@_friendly
def models() -> None:
    """List embedded and cached models."""
    from remnant.models import list_models

    table = Table("name", "kind", "cached", "description")
    for row in list_models():
        table.add_row(
            str(row["name"]),
            str(row["kind"]),
            "yes" if row["cached"] else "no",
            str(row["description"]),
        )
    console.print(table)


@app.command()
@_friendly
def check(
    model: str = typer.Argument(..., help="Embedded name, HF folder, Hub id or .gguf file."),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Load a model and show its toolchain self-check (bridge and KV cache against a full forward)."""
    from remnant.models.toolchain import TESTED_VERSIONS

    subject = _load_model(model, adapter=None, device=device, dtype=dtype)
    report = subject.toolchain
    table = Table("package", "installed", "tested")
    for package, version in report["versions"].items():
        table.add_row(package, version, TESTED_VERSIONS[package])
    console.print(table)
    console.print(
        f"self-check passed on {subject.name}: bridge vs plain model max |Δlogit| "
        f"{report['bridge_max_abs_diff']:.2g}, cached decoding vs full forward "
        f"{report['cache_max_abs_diff']:.2g} (tolerance {report['tolerance']:.2g})"
    )


@app.command("eval")
@_friendly
def eval_command(
    model: str = ModelOpt,
    target: str = TargetOpt,
    format: str | None = FormatOpt,
    concept: str | None = typer.Option(None, help="ConceptVectors: which concept to load."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the scores as JSON here."),
    adapter: Path | None = typer.Option(None, help="PEFT LoRA adapter folder to merge on top."),
    prompt_style: str = StyleOpt,
    batch_size: int = typer.Option(16, min=1),
    max_new_tokens: int = typer.Option(32, min=1),
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Score a model on a target's forget and retain items (and MCQ items)."""
    from remnant.scoring import ScoringSettings, evaluate

    settings = ScoringSettings(
        prompt_style=prompt_style, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed
    )  # type: ignore[arg-type]
    subject = _load_model(model, adapter=adapter, device=device, dtype=dtype)
    loaded = _load_target(target, format, concept, subject, settings)
    _report(evaluate(subject, loaded, settings), json_out)


@app.command()
@_friendly
def demo(
    out: Path = typer.Option(Path("remnant-demo"), help="Folder for the demo's outputs."),
    method: str = typer.Option("npo", help="Reference unlearning method to audit."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Embedded model."),
    target_name: str = typer.Option("demo", "--target", "-t", help="Built-in target."),
) -> None:
    """Audit an embedded model (SmolLM2-135M-Instruct) after unlearning a built-in target:
    score it, unlearn with a reference method, then probes, logit lens, causal tracing,
    cross-model patching and concept vectors. Each finished stage is kept in ``--out``; an
    interrupted demo resumes at the first unfinished one."""
    from remnant.concept_vectors import ValidateResult, ValidateSettings, compare, locate, validate
    from remnant.models import load_model
    from remnant.probes import lens, linear
    from remnant.reports.figures import concept_vectors as cv_figures
    from remnant.reports.figures import probes as probe_figures
    from remnant.reports.figures import tracing as tracing_figures
    from remnant.scoring import EvalResult, evaluate
    from remnant.targets import load_builtin_target
    from remnant.tracing import (
        CausalTraceResult,
        ModelDiffResult,
        TraceSettings,
        causal_trace,
        model_diff,
    )
    from remnant.unlearning import REPORT_FILE, run_unlearning

    original = load_model(model)
    target = load_builtin_target(target_name)
    console.print(f"model {original.name} ({original.content_hash}), target {target.name!r}")
    _report(_stage(out / "eval", EvalResult, lambda: evaluate(original, target)), None)
    checkpoint = out / method
    if not (checkpoint / REPORT_FILE).is_file():
        console.rule(f"unlearning with {method}")
        run_unlearning(original.name, target, method, checkpoint, overwrite=True, progress=True)
    unlearned = load_model(str(checkpoint))
    report = json.loads((checkpoint / REPORT_FILE).read_text())
    console.print(
        f"{method}: forget accuracy {_fmt(report['before']['forget']['accuracy'])} -> "
        f"{_fmt(report['after']['forget']['accuracy'])}, retain "
        f"{_fmt(report['before']['retain']['accuracy'])} -> "
        f"{_fmt(report['after']['retain']['accuracy'])}"
    )
    console.rule("linear probes")
    probes = _stage(
        out / "probes",
        linear.ProbeResult,
        lambda: linear.analyze(original, unlearned, target),
        probe_figures.probe_accuracy,
    )
    _show_probes(probes)
    console.rule("logit lens")
    readout = _stage(
        out / "lens",
        lens.LensResult,
        lambda: lens.analyze(original, unlearned, target),
        probe_figures.lens_ranks,
    )
    _show_lens(readout)
    console.rule("causal tracing (5 facts, 3 noise samples each)")
    traced = _stage(
        out / "trace",
        CausalTraceResult,
        lambda: causal_trace(
            original, target, TraceSettings(max_facts=5, n_samples=3), progress=True
        ),
        tracing_figures.trace_average,
    )
    _show_trace(traced)
    console.rule(f"patching between the original and the {method} model")
    diffed = _stage(
        out / "diff",
        ModelDiffResult,
        lambda: model_diff(
            original, unlearned, target, storing_layers=traced.storing_layers, progress=True
        ),
        tracing_figures.diff_curves,
    )
    _show_diff(diffed)
    console.rule("concept vectors")
    settings = ValidateSettings(n_candidates=5)
    checked = _stage(
        out / "validate",
        ValidateResult,
        lambda: validate(original, target, settings, locate(original, target, settings.locate)),
        cv_figures.validation_drops,
    )
    _show_validation(checked, settings.criterion)
    vectors = checked.validated_vectors() or [(c["layer"], c["index"]) for c in checked.candidates]
    signs = [c["sign"] for c in checked.candidates if (c["layer"], c["index"]) in vectors]
    compared = compare(original, unlearned, target, vectors, signs=signs)
    _write(out, "compare", compared, cv_figures.comparison(compared))
    _show_comparison(compared)
    console.print(f"all results and figures are in {out}")


def _stage(path: Path, kind: Any, compute: Callable[[], Any], figure: Any = None) -> Any:
    """The Result saved at ``{path}.json`` if a previous run finished it, else ``compute()``
    written there (with ``figure(result)`` as ``{path}.png``)."""
    saved = path.with_suffix(".json")
    if saved.is_file():
        console.print(f"kept {saved} from a previous run")
        return kind.from_json(saved.read_text())
    result = compute()
    if figure is None:
        write_text_atomic(saved, result.to_json())
    else:
        _write(path.parent, path.name, result, figure(result))
    return result


@app.command()
@_friendly
def unlearn(
    model: str = ModelOpt,
    target: str = TargetOpt,
    method: str = typer.Option(
        ..., "--method", help="ga, graddiff, npo, rmu, or retrain (tiny-synthetic only)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for the unlearned checkpoint (must not exist)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    format: str | None = FormatOpt,
    prompt_style: str = StyleOpt,
    lr: float | None = typer.Option(None, help="AdamW learning rate."),
    epochs: float | None = typer.Option(
        None, help="Maximum passes over the forget examples (the budget)."
    ),
    steps: int | None = typer.Option(
        None, help="Maximum optimizer steps (replaces the --epochs budget)."
    ),
    stop_fraction: float | None = typer.Option(
        None, help="Stop once forget accuracy (checked each epoch) <= this × its value before."
    ),
    no_stop: bool = typer.Option(False, "--no-stop", help="No stop rule: run the whole budget."),
    retain_holdout: float | None = typer.Option(
        None, help="Fraction of retain items held out of training and scored instead."
    ),
    batch_size: int | None = typer.Option(None, help="Forget examples per step."),
    seed: int | None = typer.Option(
        None, help="Seed for data order, retain split, LoRA init and RMU's vector."
    ),
    layers: str | None = typer.Option(None, help="Comma-separated decoder layers to train."),
    modules: str | None = typer.Option(
        None, help="Comma-separated name fragments of trained weights."
    ),
    lora_rank: int | None = typer.Option(
        None, help="0: full fine-tuning; r > 0: rank-r LoRA, merged."
    ),
    lora_alpha: float | None = typer.Option(None, help="LoRA alpha (scale alpha / r)."),
    passages: bool | None = typer.Option(
        None, "--passages/--no-passages", help="Also train on passages."
    ),
    beta: float | None = typer.Option(None, help="NPO inverse temperature."),
    retain_weight: float | None = typer.Option(None, help="GradDiff/NPO weight of the retain NLL."),
    layer: int | None = typer.Option(
        None, help="RMU: the layer whose activations are misdirected."
    ),
    steering_coeff: float | None = typer.Option(None, help="RMU: scale c of the random direction."),
    alpha: float | None = typer.Option(None, help="RMU: weight of the retain activation term."),
) -> None:
    """Make an unlearned checkpoint with a reference method (the input is never modified)."""
    from remnant.unlearning import run_unlearning

    report = run_unlearning(
        model, target, method, out, overwrite, progress=True, target_format=format,
        prompt_style=prompt_style, stop_rule=not no_stop, lr=lr, epochs=epochs, steps=steps,
        stop_fraction=stop_fraction, retain_holdout=retain_holdout, batch_size=batch_size,
        seed=seed, layers=layers, modules=modules, lora_rank=lora_rank, lora_alpha=lora_alpha,
        passages=passages, beta=beta, retain_weight=retain_weight, layer=layer,
        steering_coeff=steering_coeff, alpha=alpha,
    )  # fmt: skip
    table = Table("split", "accuracy before", "accuracy after")
    for split, label in (("forget", "forget"), ("retain", "retain (held out)")):
        before, after = report["before"][split], report["after"][split]
        if before is not None:
            table.add_row(label, _fmt(before["accuracy"]), _fmt(after["accuracy"]))
    console.print(table)
    training = report["training"]
    if training is not None:
        rule = training["stop_rule"]
        ending = (
            f"stop rule fired: forget accuracy <= {_fmt(rule['threshold'])}"
            if rule and rule["fired"]
            else "ran the whole budget" + ("" if rule else " (no stop rule)")
        )
        console.print(
            f"{training['steps']} of at most {training['max_steps']} steps "
            f"({training['epochs']} epochs); {ending}"
        )
    console.print(f"retain accuracy is scored on {report['retain_scored_on']}")
    console.print(
        f"wrote {out} ({report['method']}, unlearned hash {report['unlearned_content_hash']})"
    )


BaseOpt = typer.Option(..., "--base", "-b", help="The original model (spec as for --model).")
UnlearnedOpt = typer.Option(..., "--unlearned", "-u", help="The unlearned model (spec).")
ContextOpt = typer.Option(
    "generation",
    help="Read the answer where the (original) model states it in its greedy answer "
    "(generation) or right after the prompt (prompt).",
)
OutDirOpt = typer.Option(..., "--out", "-o", help="Folder for the JSON results and figures.")


@app.command()
@_friendly
def probe(
    base: str = BaseOpt,
    unlearned: str = UnlearnedOpt,
    target: str = TargetOpt,
    out: Path = OutDirOpt,
    format: str | None = FormatOpt,
    tasks: str | None = typer.Option(
        None, help="Comma-separated probe tasks: truth, recall, mcq, concept (default: all)."
    ),
    folds: int = typer.Option(5, min=2, help="Cross-validation folds (grouped by item)."),
    prompt_style: str = StyleOpt,
    batch_size: int = typer.Option(16, min=1),
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Per-layer linear probes (with controls) and the logit lens, original vs unlearned."""
    from remnant.probes import lens, linear
    from remnant.reports.figures.probes import lens_ranks, probe_accuracy
    from remnant.scoring import ScoringSettings

    settings = linear.ProbeSettings(
        tasks=tuple(t.strip() for t in tasks.split(",")) if tasks else None,
        folds=folds,
        prompt_style=prompt_style,  # type: ignore[arg-type]
        batch_size=batch_size,
        seed=seed,
    )
    original = _load_model(base, device=device, dtype=dtype)
    changed = _load_model(unlearned, device=device, dtype=dtype)
    loaded = _load_target(
        target, format, None, original, ScoringSettings(prompt_style=prompt_style)
    )  # type: ignore[arg-type]
    probes = linear.analyze(original, changed, loaded, settings)
    _write(out, "probes", probes, probe_accuracy(probes))
    _show_probes(probes)
    if loaded.forget:
        readout = lens.analyze(
            original,
            changed,
            loaded,
            lens.LensSettings(prompt_style=prompt_style, batch_size=batch_size),  # type: ignore[arg-type]
        )
        _write(out, "lens", readout, lens_ranks(readout))
        _show_lens(readout)


def _show_probes(probes: Any) -> None:
    table = Table("task", "chance", "original: best layer, acc [CI]", "unlearned", "transfer")
    for row in probes.summary():
        table.add_row(
            row["task"] + ("" if row["counts_as_knowledge"] else " (not knowledge)"),
            _fmt(row["chance"]),
            *(_best(row[model]) for model in ("original", "unlearned")),
            _fmt(row["transfer_at_unlearned_best"]),
        )
    console.print(table)


def _show_lens(readout: Any) -> None:
    table = Table("model", "median rank at best layer", "best layer", "median rank at output")
    for model, summary in readout.summary.items():
        ranks = summary["median_rank"]
        best = min(range(len(ranks)), key=ranks.__getitem__)
        table.add_row(model, f"{ranks[best]:g}", readout.layers[best], f"{ranks[-1]:g}")
    console.print(table)


def _best(scores: dict[str, Any]) -> str:
    lo, hi = scores["ci"]
    return f"L{scores['layer']}: {_fmt(scores['accuracy'])} [{_fmt(lo)}, {_fmt(hi)}]"


@app.command()
@_friendly
def trace(
    model: str = ModelOpt,
    target: str = TargetOpt,
    out: Path = OutDirOpt,
    format: str | None = FormatOpt,
    samples: int = typer.Option(10, min=1, help="Noise samples per fact."),
    noise: float = typer.Option(
        3.0, min=0, help="Noise std as a multiple of the subject embeddings' std."
    ),
    window: int = typer.Option(10, min=1, help="Layers restored together for MLP / attention."),
    max_facts: int | None = typer.Option(None, min=1, help="Trace at most this many known facts."),
    context: str = ContextOpt,
    figures: int = typer.Option(5, min=0, help="Per-fact heatmap figures to draw."),
    prompt_style: str = StyleOpt,
    batch_size: int = typer.Option(64, min=1, help="Patched rows per forward pass."),
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Causal tracing: which layers and tokens carry the forget facts the model knows."""
    from remnant.reports.figures.tracing import trace_average, trace_heatmaps
    from remnant.scoring import ScoringSettings
    from remnant.tracing import TraceSettings, causal_trace

    settings = TraceSettings(
        noise_multiplier=noise, n_samples=samples, window=window, seed=seed,
        batch_size=batch_size, max_facts=max_facts, prompt_style=prompt_style,  # type: ignore[arg-type]
        context=context,  # type: ignore[arg-type]
    )  # fmt: skip
    subject = _load_model(model, device=device, dtype=dtype)
    loaded = _load_target(target, format, None, subject, ScoringSettings(prompt_style=prompt_style))  # type: ignore[arg-type]
    result = causal_trace(subject, loaded, settings, progress=True)
    _write(out, "trace", result, trace_average(result))
    for k in range(min(figures, len(result.facts))):
        _save_figure(out / f"trace_fact{k:02d}.png", trace_heatmaps(result, k))
    _show_trace(result)


def _show_trace(result: Any) -> None:
    table = Table("site", "token class", "facts", "peak layer", "peak effect", "mean effect")
    for site, classes in result.summary().items():
        for name, row in classes.items():
            table.add_row(
                site, name, str(row["n_facts"]), str(row["peak_layer"]),
                _fmt(row["peak_effect"]), _fmt(row["mean_effect"]),
            )  # fmt: skip
    console.print(table)
    console.print(f"storing layers (MLP, last subject token): {result.storing_layers}")


@app.command()
@_friendly
def diff(
    base: str = BaseOpt,
    unlearned: str = UnlearnedOpt,
    target: str = TargetOpt,
    out: Path = OutDirOpt,
    format: str | None = FormatOpt,
    storing_from: Path | None = typer.Option(
        None, help="trace.json from `remnant trace` on the base model: its storing layers."
    ),
    max_facts: int | None = typer.Option(None, min=1, help="Patch at most this many known facts."),
    context: str = ContextOpt,
    prompt_style: str = StyleOpt,
    batch_size: int = typer.Option(64, min=1, help="Patched rows per forward pass."),
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Cross-model patching: which layers of the original restore what unlearning removed."""
    from remnant.reports.figures.tracing import diff_curves
    from remnant.scoring import ScoringSettings
    from remnant.tracing import CausalTraceResult, DiffSettings, model_diff

    storing = None
    if storing_from is not None:
        if not storing_from.is_file():
            raise RemnantError(f"--storing-from: no file {storing_from}")
        storing = CausalTraceResult.from_json(storing_from.read_text()).storing_layers
    settings = DiffSettings(
        batch_size=batch_size, max_facts=max_facts, seed=seed,
        prompt_style=prompt_style, context=context,  # type: ignore[arg-type]
    )  # fmt: skip
    original = _load_model(base, device=device, dtype=dtype)
    changed = _load_model(unlearned, device=device, dtype=dtype)
    loaded = _load_target(
        target, format, None, original, ScoringSettings(prompt_style=prompt_style)
    )  # type: ignore[arg-type]
    result = model_diff(original, changed, loaded, settings, storing_layers=storing, progress=True)
    _write(out, "diff", result, diff_curves(result, normalised=True))
    _save_figure(out / "diff_prob.png", diff_curves(result, normalised=False))
    _show_diff(result)


def _show_diff(result: Any) -> None:
    console.print(
        f"answer probability: original {_fmt(result.base_prob['mean'])}, unlearned "
        f"{_fmt(result.unlearned_prob['mean'])}; {result.n_affected} of {len(result.facts)} "
        "facts dropped enough to enter the normalised curves"
    )
    table = Table("direction", "site", "scope", "peak layer", "peak fraction", "mean over storing")
    for curve in result.curves:
        peak = curve["peak_layer"]
        table.add_row(
            curve["direction"], curve["site"], curve["scope"], "-" if peak is None else str(peak),
            _fmt(None if peak is None else curve["fraction_mean"][peak]),
            _fmt(curve["at_storing_layers"]),
        )  # fmt: skip
    console.print(table)


@app.command()
@_friendly
def concepts(
    model: str = ModelOpt,
    target: str = TargetOpt,
    out: Path = OutDirOpt,
    unlearned: list[str] = typer.Option(
        [], "--unlearned", "-u", help="Unlearned model(s) to compare the vectors with (repeat)."
    ),
    format: str | None = FormatOpt,
    candidates: int = typer.Option(10, min=1, help="Top located vectors to validate."),
    random: int = typer.Option(20, min=20, help="Random value vectors as the reference."),
    mode: str = typer.Option("zero", help="Intervention: zero, noise or project."),
    sigma: float = typer.Option(0.1, help="Noise standard deviation (--mode noise)."),
    prompt_style: str = StyleOpt,
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Concept vectors: locate, validate causally, and compare with unlearned models."""
    from remnant.concept_vectors import ValidateSettings, compare, locate, validate
    from remnant.reports.figures.concept_vectors import (
        comparison,
        located_by_layer,
        validation_drops,
    )
    from remnant.scoring import ScoringSettings

    scoring = ScoringSettings(prompt_style=prompt_style, batch_size=64, max_new_tokens=16)  # type: ignore[arg-type]
    settings = ValidateSettings(
        n_candidates=candidates, mode=mode, sigma=sigma, n_random=random, seed=seed,  # type: ignore[arg-type]
        scoring=scoring,
    )  # fmt: skip
    subject = _load_model(model, device=device, dtype=dtype)
    loaded = _load_target(target, format, None, subject, scoring)
    located = locate(subject, loaded, settings.locate)
    _write(out, "locate", located, located_by_layer(located))
    checked = validate(subject, loaded, settings, located)
    _write(out, "validate", checked, validation_drops(checked))
    _show_validation(checked, settings.criterion)
    vectors = checked.validated_vectors()
    signs = [c["sign"] for c in checked.candidates if c["validated"]]
    if not vectors and unlearned:
        vectors, signs = located.vectors(candidates), located.signs(candidates)
        console.print("no vector validated: comparing the top located vectors instead")
    for k, spec in enumerate(unlearned):
        other = _load_model(spec, device=device, dtype=dtype)
        compared = compare(subject, other, loaded, vectors, signs=signs)
        _write(out, f"compare{k}", compared, comparison(compared))
        _show_comparison(compared)


def _show_validation(checked: Any, measure: str) -> None:
    table = Table("rank", "layer", "index", "score", "forget drop", "retain drop", "p", "validated")
    for row in checked.candidates:
        table.add_row(
            str(row["located_rank"]), str(row["layer"]), str(row["index"]), _fmt(row["located_score"]),
            _fmt(row[f"forget_{measure}_drop"]), _fmt(row[f"retain_{measure}_drop"]),
            _fmt(row["p_value"]), "yes" if row["validated"] else "no",
        )  # fmt: skip
    console.print(table)
    console.print(f"{checked.n_validated} of {len(checked.candidates)} validated ({measure})")
    together = checked.set_ablation
    chosen, random = together["chosen"], together["random_mean"]
    console.print(
        f"all {len(together['vectors'])} {'validated' if checked.n_validated else 'candidate'} "
        f"vectors at once: forget accuracy drop {_fmt(chosen['forget_accuracy_drop'])}, retain "
        f"{_fmt(chosen['retain_accuracy_drop'])}; as many random vectors (mean of "
        f"{len(together['random'])} sets): forget {_fmt(random['forget_accuracy_drop'])}, "
        f"retain {_fmt(random['retain_accuracy_drop'])}"
    )


def _show_comparison(compared: Any) -> None:
    vec, ref = compared.summary["vectors"], compared.summary["random"]
    console.print(
        f"{compared.unlearned['name']}: cosine of the concept vectors mean "
        f"{_fmt(vec['cosine']['mean'])} (min {_fmt(vec['cosine']['min'])}); random vectors mean "
        f"{_fmt(ref['cosine']['mean'])} (min {_fmt(ref['cosine']['min'])})"
    )


@app.command()
@_friendly
def ablate(
    model: str = ModelOpt,
    target: str = TargetOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the ablated checkpoint."),
    vectors: int | None = typer.Option(
        None,
        "--vectors",
        min=1,
        help="Ablate the N top-ranked located vectors (ranked by vocabulary projection, not "
        "causally validated).",
    ),
    layer: list[int] = typer.Option(
        [], "--layer", help="Layer of a vector to ablate (repeat, with --index)."
    ),
    index: list[int] = typer.Option([], "--index", help="Neuron index of that vector (repeat)."),
    mode: str = typer.Option("zero", "--mode", help="zero, noise or project."),
    sigma: float = typer.Option(0.1, "--sigma", help="Noise standard deviation (--mode noise)."),
    seed: int = typer.Option(0, help="Seed of the noise."),
    format: str | None = FormatOpt,
    adapter: Path | None = typer.Option(None, help="PEFT LoRA adapter folder to merge on top."),
    prompt_style: str = StyleOpt,
    batch_size: int = typer.Option(16, min=1),
    max_new_tokens: int = typer.Option(32, min=1),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Ablate concept vectors into a new checkpoint (the input is never modified)."""
    from remnant.concept_vectors import ablate_subject
    from remnant.scoring import ScoringSettings

    if len(layer) != len(index):
        raise RemnantError("give --layer and --index in pairs, one of each per vector")
    if out.exists() and not overwrite:
        raise RemnantError(f"{out} exists; choose another output folder or pass --overwrite")
    settings = ScoringSettings(
        prompt_style=prompt_style, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed
    )  # type: ignore[arg-type]
    subject = _load_model(model, adapter=adapter, device=device, dtype=dtype)
    loaded = _load_target(target, format, None, subject, settings)
    result = ablate_subject(
        subject, loaded, out, vectors=list(zip(layer, index)) or None, n_vectors=vectors,
        mode=mode, sigma=sigma, seed=seed, settings=settings, overwrite=overwrite,  # type: ignore[arg-type]
    )  # fmt: skip
    table = Table("split", "accuracy before", "after", "log p(answer) before", "after")
    for split in result.before:
        b, a = result.before[split], result.after[split]
        table.add_row(
            split, _fmt(b["accuracy"]), _fmt(a["accuracy"]),
            _fmt(b["mean_logprob_sum"]), _fmt(a["mean_logprob_sum"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{result.mode} ablation of {len(result.vectors)} vector(s) ({result.selection}); "
        f"wrote {result.output} ({result.output_content_hash})"
    )


def _write(out: Path, name: str, result: Any, figure: Any) -> None:
    """Write ``{name}.json`` and ``{name}.png`` into ``out`` (created), each atomically."""
    write_text_atomic(out / f"{name}.json", result.to_json())
    _save_figure(out / f"{name}.png", figure)
    console.print(f"wrote {out / name}.json and .png")


def _save_figure(path: Path, figure: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, dpi=110, format="png")
    partial.replace(path)


def _load_model(
    spec: str, *, adapter: Path | None = None, device: str | None = None, dtype: str | None = None
):
    import torch

    from remnant.models import load_model

    if dtype is not None and dtype not in DTYPES:
        raise RemnantError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return load_model(
        spec, adapter=adapter, device=device, dtype=getattr(torch, dtype) if dtype else None
    )


def _load_target(path: str, format: str | None, concept: str | None, subject: Any, settings: Any):
    from remnant.scoring import encode_prompts, format_prompt, generate, resolve_style
    from remnant.targets import load_target

    def answer_fn(questions):
        style = resolve_style(subject, settings.prompt_style)
        prompts = encode_prompts(
            subject, [format_prompt(subject, q, style) for q in questions], style
        )
        return generate(
            subject, prompts, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size
        )

    source = f"greedy output of {subject.name} ({subject.content_hash})"
    return load_target(path, format, concept=concept, answer_fn=answer_fn, answer_source=source)


def _report(result: Any, json_out: Path | None) -> None:
    table = Table(
        "split", "n", "accuracy", "95% CI", "answered", "acc. (answered)", "mean log p(answer)"
    )
    for split, scores in result.splits.items():
        lo, hi = scores["ci"]
        table.add_row(
            split,
            str(scores["n"]),
            _fmt(scores["accuracy"]),
            f"[{_fmt(lo)}, {_fmt(hi)}]",
            str(scores["n_answered"]),
            _fmt(scores["answered_accuracy"]),
            _fmt(scores.get("mean_logprob_sum")),
        )
    console.print(table)
    if "mcq" in result.splits:
        mcq = result.splits["mcq"]
        lo, hi = mcq["likelihood_ci"]
        console.print(
            f"mcq by choice likelihood: {_fmt(mcq['likelihood_accuracy'])} [{_fmt(lo)}, {_fmt(hi)}]"
            f" (chance {_fmt(mcq['chance'])})"
        )
    console.print(f"prompt style: {result.settings['prompt_style']}")
    if json_out is not None:
        write_text_atomic(json_out, result.to_json())
        console.print(f"wrote {json_out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    app()
