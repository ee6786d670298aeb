"""``remnant audit``, ``remnant report`` and ``remnant demo``: checkpoints in, verdicts and an HTML
report out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from remnant.cli import options, render
from remnant.errors import RemnantError

if TYPE_CHECKING:
    from rich.progress import Progress


def audit(
    original: options.OriginalSpec = None,
    unlearned: Annotated[
        list[str],
        typer.Option(
            "--unlearned",
            "-u",
            help="An unlearned model (repeat the option to compare several): NAME=SPEC, or a "
            "spec alone (named after its folder or file).",
        ),
    ] = ...,  # type: ignore[assignment]
    gold: options.GoldSpec = None,
    target: options.TargetPath = ...,
    out: options.OutDir = ...,
    format: options.FormatOption = None,
    concept: options.ConceptOption = None,
    config: Annotated[
        str | None,
        typer.Option(help="Budgets: a YAML file, or quick, default or thorough (the default)."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="The quick config.")] = False,
    thorough: Annotated[bool, typer.Option("--thorough", help="The thorough config.")] = False,
    stages: Annotated[
        str | None,
        typer.Option(help="Comma-separated stages to run (default: the config's)."),
    ] = None,
    force: Annotated[
        list[str] | None,
        typer.Option(help="Compute a stage (probes) or stage id (probes-npo) again."),
    ] = None,
    seed: options.Seed = 0,
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Audit unlearned checkpoints: a verdict per model with its evidence, results.json and a
    self-contained HTML report in --out.

    Every stage is kept in --out as it finishes; re-running the same command skips them, so an
    interrupted audit resumes where it stopped."""
    from remnant.audit import audit as run
    from remnant.audit import load_config
    from remnant.settings import ScoringSettings

    chosen = _config_name(config, quick, thorough)
    loaded_config = load_config(chosen)
    if stages is not None:
        loaded_config = loaded_config.with_stages([s.strip() for s in stages.split(",") if s])
    named = _named(unlearned)
    first = options.load(options.original_spec(original, None), device=device, dtype=dtype)
    models = {name: options.load(spec, device=device, dtype=dtype) for name, spec in named.items()}
    control = None if gold is None else options.load(gold, device=device, dtype=dtype)
    loaded = options.load_target_for(target, format, first, ScoringSettings(seed=seed), concept)
    with _stage_progress() as (on_start, on_done):
        results = run(
            first, models, loaded, out, gold=control, config=loaded_config, seed=seed,
            force=tuple(force or ()), progress=True, on_start=on_start, on_done=on_done,
        )  # fmt: skip
    render.verdicts(results)
    render.console.print(f"report: {out / 'index.html'}")


def report(
    out: Annotated[Path, typer.Argument(help="An audit's output folder.")],
) -> None:
    """Re-render DIR/index.html from DIR/results.json, without loading any model."""
    from remnant.audit import load_results
    from remnant.reports.html import write_report

    results, timings = load_results(out)
    path = write_report(results, out, timings)
    render.verdicts(results)
    render.console.print(f"report: {path}")


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's audit.")] = Path("remnant-demo"),
    model: Annotated[
        Literal["smollm2-135m-instruct", "tiny-synthetic"],
        typer.Option("--model", "-m", help="Embedded model."),
    ] = "smollm2-135m-instruct",
    target: Annotated[
        Literal["demo", "tiny-synthetic"], typer.Option("--target", "-t", help="Built-in target.")
    ] = "demo",
    methods: Annotated[
        str, typer.Option(help="Comma-separated reference unlearning methods to audit.")
    ] = "npo,rmu",
    config: Annotated[
        str, typer.Option(help="Budgets: quick, default, thorough or a YAML file.")
    ] = "quick",
) -> None:
    """Audit SmolLM2-135M-Instruct after NPO and RMU unlearned the built-in demo target.

    The reference checkpoints are made once and cached; the audit runs the quick config and
    writes the report to --out. A re-run only re-renders what is already done."""
    from remnant.audit import demo as run

    names = [m.strip() for m in methods.split(",") if m.strip()]
    with _stage_progress() as (on_start, on_done):
        results = run(
            out, model=model, target=target, methods=names, config=config, progress=True,
            on_start=on_start, on_done=on_done,
        )  # fmt: skip
    render.verdicts(results)
    render.console.print(f"report: {out / 'index.html'}")


def _config_name(config: str | None, quick: bool, thorough: bool) -> str:
    given = [name for name, on in (("quick", quick), ("thorough", thorough)) if on]
    if config is not None:
        given.append(config)
    if len(given) > 1:
        raise RemnantError("give one of --config, --quick and --thorough")
    return given[0] if given else "default"


def _named(specs: list[str]) -> dict[str, str]:
    """``--unlearned`` values by model name: ``NAME=SPEC``, or the spec's folder or file stem."""
    named: dict[str, str] = {}
    for text in specs:
        name, _, spec = text.partition("=") if "=" in text else ("", "", text)
        name = name or Path(spec.rstrip("/")).stem or spec
        if name in named:
            raise RemnantError(f"two unlearned models are named {name!r}: name them with NAME=SPEC")
        named[name] = spec
    return named


class _stage_progress:
    """A rich progress display over the audit's stages (with the time left), beside the
    stages' own bars; yields the audit's start and done callbacks."""

    def __enter__(self) -> tuple[Any, Any]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress: Progress = Progress(
            TextColumn("[bold]audit[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=render.errors, transient=False,
        )  # fmt: skip
        self.progress.start()
        self.task = self.progress.add_task("starting", total=None)
        self.started = 0.0
        return self.on_start, self.on_done

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_start(self, stage_id: str, index: int, count: int) -> None:
        self.progress.update(self.task, description=stage_id, total=count, completed=index)
        self.started = time.perf_counter()

    def on_done(self, record: dict[str, Any]) -> None:
        status = "kept" if record.get("kept") else record["status"]
        seconds = time.perf_counter() - self.started
        detail = f": {record['error']}" if record["error"] else ""
        self.progress.console.print(
            f"{record['id']}: {status} ({seconds:.0f} s){detail}", markup=False, highlight=False
        )
        self.progress.advance(self.task)
