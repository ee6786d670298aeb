"""Writing results and their figures: ``{name}.json`` and ``{name}.png`` in an output folder,
each atomically."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from remnant.io import atomic_file
from remnant.results import Result

FIGURE_DPI = 110


def save_figure(path: str | os.PathLike[str], figure: Figure) -> Path:
    """Write ``figure`` as a PNG to ``path``, atomically."""
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=FIGURE_DPI, format="png")
    return Path(path)


def save_result(
    out: str | os.PathLike[str], name: str, result: Result, figure: Figure | None = None
) -> Path:
    """Write ``result`` as ``out/{name}.json`` and ``figure`` (if any) as ``out/{name}.png``;
    returns the JSON path."""
    out = Path(out)
    path = result.save(out / f"{name}.json")
    if figure is not None:
        save_figure(out / f"{name}.png", figure)
    return path
