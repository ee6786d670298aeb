"""The audit's stages: which analysis each runs, on which models, with which settings class.

A stage runs either once on the original model (``scope="original"``: causal tracing and
locating concept vectors, which describe where the original stores the facts) or once per
audited model against the original (``scope="each"``; ``behaviour`` also scores the original
itself). Attacks get the gold model as their control, except when the audited model is the
gold model itself: it is then attacked on its own, its line being its own plain accuracy (membership
inference keeps the gold model as the reference, so exact unlearning is not flagged as
over-unlearning).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from remnant.models import Model
    from remnant.results import Result
    from remnant.settings import Settings
    from remnant.targets import Target


@dataclasses.dataclass
class Context:
    """What every stage may use: the models, the target, and the Results of earlier stages by
    stage id."""

    original: Model
    gold: Model | None
    target: Target
    results: dict[str, Result]
    progress: bool = False


Compute = Callable[[Context, "Settings", "Model | None"], "Result"]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One analysis of the audit."""

    name: str
    section: Literal["behaviour", "attacks", "inside"]
    scope: Literal["original", "each"]
    settings_path: str
    """``module:Class`` of its settings (imported when first needed)."""
    compute: Compute
    """(context, settings, audited model or None for an original-scope stage) -> Result."""
    needs: str | None = None
    """A stage whose Result this one uses (if it failed, this one is skipped)."""

    @property
    def settings(self) -> type[Settings]:
        module, name = self.settings_path.split(":")
        return getattr(importlib.import_module(module), name)

    def extra_inputs(self, context: Context) -> dict[str, Any]:
        """Inputs besides models, target and settings that shape the Result (for its key)."""
        if self.name == "diff":
            return {"storing_layers": _storing_layers(context)}
        if self.name == "compare":
            vectors, signs = context.results["concepts"].comparison_vectors()
            return {"vectors": [list(v) for v in vectors], "signs": list(signs)}
        return {}


def _storing_layers(context: Context) -> list[int] | None:
    traced = context.results.get("trace")
    return None if traced is None else list(traced.storing_layers)


def _behaviour(context: Context, settings: Settings, model: Model | None) -> Result:
    from remnant.scoring import evaluate

    return evaluate(model or context.original, context.target, settings)


def _pair(module: str) -> Compute:
    """A pairwise analysis ``module.run(original, model, target, settings)``."""

    def compute(context: Context, settings: Settings, model: Model | None) -> Result:
        return importlib.import_module(module).run(
            context.original, model, context.target, settings
        )

    return compute


def _attack(module: str, *, gold_against_itself: bool = False) -> Compute:
    """An attack ``module.run(original, model, target, settings, gold=...)``. The gold model
    audited itself is attacked without a gold control, unless ``gold_against_itself``
    (membership inference: whether its AUROC lies below the gold model's own)."""

    def compute(context: Context, settings: Settings, model: Model | None) -> Result:
        alone = model is context.gold and not gold_against_itself
        gold = None if alone else context.gold
        return importlib.import_module(module).run(
            context.original, model, context.target, settings, gold=gold,
            progress=context.progress,
        )  # fmt: skip

    return compute


def _trace(context: Context, settings: Settings, model: Model | None) -> Result:
    from remnant.tracing import causal_trace

    return causal_trace.run(context.original, context.target, settings, progress=context.progress)


def _diff(context: Context, settings: Settings, model: Model | None) -> Result:
    from remnant.tracing import model_diff

    return model_diff.run(
        context.original, model, context.target, settings,
        storing_layers=_storing_layers(context), progress=context.progress,
    )  # fmt: skip


def _concepts(context: Context, settings: Settings, model: Model | None) -> Result:
    from remnant.concept_vectors import validate

    return validate.run(context.original, context.target, settings)


def _compare(context: Context, settings: Settings, model: Model | None) -> Result:
    from remnant.concept_vectors import compare

    vectors, signs = context.results["concepts"].comparison_vectors()
    return compare.run(
        context.original, model, context.target, settings, vectors=vectors, signs=signs
    )


#: Every stage, in the order an audit runs them.
STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("behaviour", "behaviour", "each", "remnant.settings:ScoringSettings", _behaviour),
        Stage("probes", "inside", "each", "remnant.probes.linear:ProbeSettings",
              _pair("remnant.probes.linear")),
        Stage("lens", "inside", "each", "remnant.probes.lens:LensSettings",
              _pair("remnant.probes.lens")),
        Stage("trace", "inside", "original", "remnant.tracing:TraceSettings", _trace),
        Stage("diff", "inside", "each", "remnant.tracing:DiffSettings", _diff),
        Stage("concepts", "inside", "original", "remnant.concept_vectors:ValidateSettings",
              _concepts),
        Stage("compare", "inside", "each", "remnant.concept_vectors:CompareSettings", _compare,
              needs="concepts"),
        Stage("in_context", "attacks", "each", "remnant.attacks.in_context:InContextSettings",
              _attack("remnant.attacks.in_context")),
        Stage("reasoning", "attacks", "each", "remnant.attacks.reasoning:ReasoningSettings",
              _attack("remnant.attacks.reasoning")),
        Stage("variants", "attacks", "each", "remnant.attacks.variants:VariantSettings",
              _attack("remnant.attacks.variants")),
        Stage("mia", "attacks", "each", "remnant.attacks.mia:MIASettings",
              _attack("remnant.attacks.mia", gold_against_itself=True)),
        Stage("relearn", "attacks", "each", "remnant.attacks.relearn:RelearnSettings",
              _attack("remnant.attacks.relearn")),
        Stage("embedding", "attacks", "each", "remnant.attacks.embedding:EmbeddingSettings",
              _attack("remnant.attacks.embedding")),
        Stage("quantize", "attacks", "each", "remnant.attacks.quantize:QuantizeSettings",
              _attack("remnant.attacks.quantize")),
    )
}  # fmt: skip
