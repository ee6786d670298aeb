"""The ``remnant`` command line (Typer): `main.py` registers the commands, `options.py` holds the
shared options, `render.py` the tables, and one module per command group parses and calls."""

from remnant.cli.main import app, main

__all__ = ["app", "main"]
