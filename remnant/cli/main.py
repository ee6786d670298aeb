"""The ``remnant`` command: registers the commands; each command module only parses its
options and calls the Python API."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.logging import RichHandler

from remnant.cli import attacks, audit, concepts, evaluate, models, probes, render, tracing, unlearn
from remnant.errors import RemnantError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None)

COMMANDS: dict[str, Callable[..., None]] = {
    "models": models.models,
    "check": models.check,
    "eval": evaluate.evaluate,
    "audit": audit.audit,
    "report": audit.report,
    "demo": audit.demo,
    "unlearn": unlearn.unlearn,
    "probe": probes.probe,
    "trace": tracing.trace,
    "diff": tracing.diff,
    "concepts": concepts.concepts,
    "ablate": concepts.ablate,
    "attack": attacks.attack,
}


def friendly(command: Callable[..., None]) -> Callable[..., None]:
    """Print a `RemnantError` as one message and exit with code 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        configure_logging()
        try:
            command(*args, **kwargs)
        except RemnantError as exc:
            render.errors.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper


def configure_logging() -> None:
    """remnant's progress messages on stderr; the libraries' chatter off."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=render.errors, show_path=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "transformer_lens"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _show_version(shown: bool) -> None:
    if shown:
        from remnant import __version__

        render.console.print(f"remnant {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Audit a language model after machine unlearning: is the knowledge gone, or hidden?

    Commands print their key numbers and write JSON results and PNG figures."""


for _name, _command in COMMANDS.items():
    app.command(_name)(friendly(_command))


def main() -> None:
    app()
