"""``remnant demo``: the audit pipeline on an embedded model and a built-in target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from remnant.cli import render
from remnant.cli.unlearn import Method
from remnant.results import Result

#: How each stage is shown on the terminal.
SHOW = {
    "eval": render.evaluation,
    "unlearning": render.unlearning,
    "probes": render.probes,
    "lens": render.lens,
    "trace": render.trace,
    "diff": render.diff,
    "validate": render.validation,
    "compare": render.comparison,
}


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's outputs.")] = Path(
        "remnant-demo"
    ),
    method: Annotated[Method, typer.Option(help="Reference unlearning method to audit.")] = "npo",
    model: Annotated[
        Literal["smollm2-135m-instruct", "tiny-synthetic"],
        typer.Option("--model", "-m", help="Embedded model."),
    ] = "smollm2-135m-instruct",
    target: Annotated[
        Literal["demo", "tiny-synthetic"], typer.Option("--target", "-t", help="Built-in target.")
    ] = "demo",
) -> None:
    """Audit SmolLM2-135M-Instruct after unlearning the built-in demo target.

    Scores the model, unlearns with a reference method, then runs probes, the logit lens,
    causal tracing, cross-model patching and concept vectors. Each finished stage is kept in
    --out; an interrupted demo resumes at the first unfinished one."""
    from remnant.audit import demo as run

    def show(name: str, result: Result, kept: bool) -> None:
        render.console.rule(name)
        if kept:
            render.console.print(f"kept stage {name} from a previous run")
        SHOW[name](result)

    run(out, model=model, target=target, method=method, on_stage=show, progress=True)
    render.console.print(f"all results and figures are in {out}")
