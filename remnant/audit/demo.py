"""`demo`: the audit of an embedded model after reference unlearning of a built-in target."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from remnant.audit.run import audit
from remnant.models import Model, load_model
from remnant.models.cache import cache_key, remnant_home, source_digest
from remnant.targets import Target

log = logging.getLogger(__name__)

#: The gold twin of an embedded model, where one exists.
GOLD = {"tiny-synthetic": "tiny-synthetic-gold"}


def reference_checkpoint(
    model: Model, target: Target, method: str, *, progress: bool = False
) -> Path:
    """A checkpoint of ``model`` unlearned from ``target`` by ``method`` with its preset,
    made once and kept under ``$REMNANT_HOME/checkpoints`` in a folder keyed by the model's
    content hash, the target, the settings and the unlearning code."""
    from remnant import unlearning
    from remnant.unlearning import REPORT_FILE, UnlearningSettings, unlearn

    settings = UnlearningSettings(method=method)
    key = cache_key(
        model=model.content_hash,
        target=target.model_dump(mode="json"),
        settings=settings.record(),
        code=source_digest(unlearn, unlearning.train, unlearning.losses, unlearning.data,
                           unlearning.config),
    )  # fmt: skip
    out = remnant_home() / "checkpoints" / f"{model.name}-{target.name}-{method}-{key}"
    if not (out / REPORT_FILE).is_file():
        log.info("making the %s reference checkpoint (once): %s", method, out)
        unlearn.run(model, target, settings, out=out, overwrite=True, progress=progress)
    return out


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
        method: load_model(str(reference_checkpoint(original, chosen, method, progress=progress)))
        for method in methods
    }
    gold = load_model(GOLD[model]) if model in GOLD else None
    return audit(
        original, unlearned, chosen, out, gold=gold, config=config, progress=progress, **callbacks
    )
