"""`demo`: the audit of an embedded model after reference unlearning of a built-in target."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from remnant.audit.run import audit
from remnant.models import load_model
from remnant.unlearning import UnlearningSettings, cached_run

#: The gold twin of an embedded model, where one exists.
GOLD = {"tiny-synthetic": "tiny-synthetic-gold"}


def demo(
    out: str | Path,
    *,
    model: str = "smollm2-135m-instruct",
    target: str = "demo",
    methods: Sequence[str] = ("npo", "rmu"),
    config: str = "quick",
    progress: bool = False,
    **callbacks: Any,
) -> dict[str, Any]:
    """Audit embedded ``model`` after each reference method in ``methods`` unlearned the
    built-in ``target`` (checkpoints made once and cached), with its gold twin when it has one,
    under ``config``; returns what ``{out}/results.json`` holds."""
    from remnant.targets import load_builtin_target

    original = load_model(model)
    chosen = load_builtin_target(target)
    unlearned = {
        method: load_model(
            str(cached_run(original, chosen, UnlearningSettings(method=method), progress=progress))
        )
        for method in methods
    }
    gold = load_model(GOLD[model]) if model in GOLD else None
    return audit(
        original, unlearned, chosen, out, gold=gold, config=config, progress=progress, **callbacks
    )
