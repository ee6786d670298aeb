"""The audit pipeline: run the analyses in order and keep each finished stage on disk.

Every stage's Result is written to ``{out}/{stage}.json`` (with its figure) as soon as it
exists, and ``{out}/stages.json`` records the key of the inputs that made it: the models'
content hashes, the target's content, the settings, and the Result's kind and schema version.
A re-run with the same inputs loads the stage instead of computing it, so an interrupted run
resumes at the first unfinished stage; a stage whose inputs changed, or whose saved file is
of another kind or schema, is computed again.

Today the pipeline is the demo (`demo`): an embedded model, a built-in target, a reference
unlearning method, then every analysis. The audit command grows from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from remnant.errors import ResultFormatError
from remnant.io import write_text_atomic
from remnant.models import Model, load_model
from remnant.models.cache import cache_key
from remnant.results import Result
from remnant.settings import Settings
from remnant.targets import Target

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Result)

STAGES_FILE = "stages.json"

#: Called after every stage with its name, its Result and whether it was loaded from disk.
StageCallback = Callable[[str, Result, bool], None]


class StageCache:
    """Results kept in ``out`` under the key of the inputs that made them."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        manifest = self.out / STAGES_FILE
        self.keys: dict[str, str] = json.loads(manifest.read_text()) if manifest.is_file() else {}

    def run(
        self,
        name: str,
        kind: type[R],
        inputs: dict[str, Any],
        compute: Callable[[], R],
        figure: Callable[[R], Any] | None = None,
    ) -> tuple[R, bool]:
        """The stage's Result and whether it was kept from an earlier run: loaded from
        ``{out}/{name}.json`` when its key matches ``inputs``, else computed and saved."""
        from remnant.reports.files import save_result

        key = cache_key(kind=kind.kind, schema_version=kind.schema_version, **inputs)
        path = self.out / f"{name}.json"
        if path.is_file() and self.keys.get(name) == key:
            try:
                return kind.load(path), True
            except ResultFormatError as exc:
                log.warning("computing stage %s again: %s", name, exc)
        result = compute()
        save_result(self.out, name, result, figure(result) if figure else None)
        self.keys[name] = key
        write_text_atomic(self.out / STAGES_FILE, json.dumps(self.keys, indent=2) + "\n")
        return result, False


def stage_inputs(models: list[Model], target: Target, settings: Settings | None) -> dict[str, Any]:
    """What shapes a stage's Result: the models' content hashes, the target, the settings."""
    return {
        "models": [model.content_hash for model in models],
        "target": target.model_dump(mode="json"),
        "settings": settings.record() if settings is not None else None,
    }


def demo(
    out: str | Path,
    *,
    model: str = "smollm2-135m-instruct",
    target: str = "demo",
    method: str = "npo",
    on_stage: StageCallback | None = None,
    progress: bool = False,
) -> dict[str, Result]:
    """Audit an embedded model after unlearning a built-in target with a reference method:
    score it, unlearn (checkpoint in ``{out}/{method}``), then linear probes, logit lens, causal
    tracing (5 facts, 3 noise samples each), patching between the original and the unlearned
    model, concept vectors (5 candidates validated) and their comparison. Returns the Results
    by stage name; ``on_stage`` sees each as it is done."""
    from remnant.concept_vectors import CompareSettings, ValidateSettings, compare, validate
    from remnant.probes import lens, linear
    from remnant.reports.figures import concept_vectors as cv_figures
    from remnant.reports.figures import probes as probe_figures
    from remnant.reports.figures import tracing as tracing_figures
    from remnant.scoring import EvalResult, ScoringSettings, evaluate
    from remnant.targets import load_builtin_target
    from remnant.tracing import (
        CausalTraceResult,
        DiffSettings,
        ModelDiffResult,
        TraceSettings,
        causal_trace,
        model_diff,
    )
    from remnant.unlearning import UnlearningSettings
    from remnant.unlearning import unlearn as unlearning

    out = Path(out)
    notify = on_stage or (lambda name, result, kept: None)
    original = load_model(model)
    chosen = load_builtin_target(target)
    stages = StageCache(out)
    results: dict[str, Result] = {}

    def stage(name, kind, models, settings, compute, figure=None, **extra):
        inputs = stage_inputs(models, chosen, settings) | extra
        result, kept = stages.run(name, kind, inputs, compute, figure)
        results[name] = result
        notify(name, result, kept)
        return result

    scoring = ScoringSettings()
    stage("eval", EvalResult, [original], scoring, lambda: evaluate(original, chosen, scoring))
    unlearn_settings = UnlearningSettings(method=method)
    checkpoint = out / method
    if not (checkpoint / unlearning.REPORT_FILE).is_file():
        stages.keys.pop("unlearning", None)  # the checkpoint itself is gone: make it again
    stage(
        "unlearning",
        unlearning.UnlearningResult,
        [original],
        unlearn_settings,
        lambda: unlearning.run(
            model, chosen, unlearn_settings, out=checkpoint, overwrite=True, progress=progress
        ),
    )
    unlearned = load_model(str(checkpoint))
    pair = [original, unlearned]
    probe_settings = linear.ProbeSettings()
    stage(
        "probes", linear.ProbeResult, pair, probe_settings,
        lambda: linear.run(original, unlearned, chosen, probe_settings),
        probe_figures.probe_accuracy,
    )  # fmt: skip
    lens_settings = lens.LensSettings()
    stage(
        "lens", lens.LensResult, pair, lens_settings,
        lambda: lens.run(original, unlearned, chosen, lens_settings),
        probe_figures.lens_ranks,
    )  # fmt: skip
    trace_settings = TraceSettings(max_facts=5, n_samples=3)
    traced = stage(
        "trace", CausalTraceResult, [original], trace_settings,
        lambda: causal_trace.run(original, chosen, trace_settings, progress=progress),
        tracing_figures.trace_average,
    )  # fmt: skip
    diff_settings = DiffSettings()
    stage(
        "diff", ModelDiffResult, pair, diff_settings,
        lambda: model_diff.run(
            original, unlearned, chosen, diff_settings, storing_layers=traced.storing_layers,
            progress=progress,
        ),
        tracing_figures.diff_curves,
    )  # fmt: skip
    validate_settings = ValidateSettings(n_candidates=5)
    checked = stage(
        "validate", validate.ValidateResult, [original], validate_settings,
        lambda: validate.run(original, chosen, validate_settings),
        cv_figures.validation_drops,
    )  # fmt: skip
    vectors, signs = checked.comparison_vectors()
    compare_settings = CompareSettings()
    stage(
        "compare", compare.CompareResult, pair,
        compare_settings,
        lambda: compare.run(
            original, unlearned, chosen, compare_settings, vectors=vectors, signs=signs
        ),
        cv_figures.comparison,
        vectors=vectors,
        signs=signs,
    )  # fmt: skip
    return results
