"""Progress bars for long work, shown only when asked for (the CLI asks; library calls do not)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str,
    enabled: bool,
) -> Any:
    """A tqdm bar over ``iterable`` (or counting to ``total``); a silent pass-through when not
    ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled)
