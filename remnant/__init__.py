"""remnant: audit language models after machine unlearning.

One import gives the whole Python API (names load on first use, so ``import remnant`` is quick)::

    import remnant as rm

    original = rm.load_model("tiny-synthetic")
    unlearned = rm.load_model("tiny-synthetic-gold")
    target = rm.load_target("tiny-synthetic")
    rm.evaluate(original, target, rm.ScoringSettings())
    rm.probe(original, unlearned, target, rm.ProbeSettings())

Every analysis is ``analysis(models..., target, settings) -> Result``; see ``examples/tour.py``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("remnant")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: Public name -> (module, attribute in it).
_EXPORTS: dict[str, tuple[str, str]] = {
    "Model": ("remnant.models", "Model"),
    "load_model": ("remnant.models", "load_model"),
    "Target": ("remnant.targets", "Target"),
    "load_target": ("remnant.targets", "load_target"),
    "Result": ("remnant.results", "Result"),
    "RemnantError": ("remnant.errors", "RemnantError"),
    "ScoringSettings": ("remnant.settings", "ScoringSettings"),
    "evaluate": ("remnant.scoring", "evaluate"),
    "ProbeSettings": ("remnant.probes.linear", "ProbeSettings"),
    "probe": ("remnant.probes.linear", "run"),
    "LensSettings": ("remnant.probes.lens", "LensSettings"),
    "logit_lens": ("remnant.probes.lens", "run"),
    "TraceSettings": ("remnant.tracing.causal_trace", "TraceSettings"),
    "trace": ("remnant.tracing.causal_trace", "run"),
    "DiffSettings": ("remnant.tracing.model_diff", "DiffSettings"),
    "diff": ("remnant.tracing.model_diff", "run"),
    "LocateSettings": ("remnant.concept_vectors.locate", "LocateSettings"),
    "locate": ("remnant.concept_vectors.locate", "run"),
    "ValidateSettings": ("remnant.concept_vectors.validate", "ValidateSettings"),
    "validate": ("remnant.concept_vectors.validate", "run"),
    "CompareSettings": ("remnant.concept_vectors.compare", "CompareSettings"),
    "compare": ("remnant.concept_vectors.compare", "run"),
    "AblateSettings": ("remnant.concept_vectors.ablate", "AblateSettings"),
    "ablate": ("remnant.concept_vectors.ablate", "run"),
    "UnlearningSettings": ("remnant.unlearning.unlearn", "UnlearningSettings"),
    "unlearn": ("remnant.unlearning.unlearn", "run"),
    "InContextSettings": ("remnant.attacks.in_context", "InContextSettings"),
    "in_context_attack": ("remnant.attacks.in_context", "run"),
    "ReasoningSettings": ("remnant.attacks.reasoning", "ReasoningSettings"),
    "reasoning_attack": ("remnant.attacks.reasoning", "run"),
    "VariantSettings": ("remnant.attacks.variants", "VariantSettings"),
    "variant_attack": ("remnant.attacks.variants", "run"),
    "MIASettings": ("remnant.attacks.mia", "MIASettings"),
    "membership_inference": ("remnant.attacks.mia", "run"),
    "RelearnSettings": ("remnant.attacks.relearn", "RelearnSettings"),
    "relearn_attack": ("remnant.attacks.relearn", "run"),
    "EmbeddingSettings": ("remnant.attacks.embedding", "EmbeddingSettings"),
    "embedding_attack": ("remnant.attacks.embedding", "run"),
    "QuantizeSettings": ("remnant.attacks.quantize", "QuantizeSettings"),
    "quantization_attack": ("remnant.attacks.quantize", "run"),
    "audit": ("remnant.audit", "audit"),
    "AuditConfig": ("remnant.audit", "AuditConfig"),
    "load_config": ("remnant.audit", "load_config"),
}

__all__ = [
    "__version__",
    "Model",
    "load_model",
    "Target",
    "load_target",
    "Result",
    "RemnantError",
    "ScoringSettings",
    "evaluate",
    "ProbeSettings",
    "probe",
    "LensSettings",
    "logit_lens",
    "TraceSettings",
    "trace",
    "DiffSettings",
    "diff",
    "LocateSettings",
    "locate",
    "ValidateSettings",
    "validate",
    "CompareSettings",
    "compare",
    "AblateSettings",
    "ablate",
    "UnlearningSettings",
    "unlearn",
    "InContextSettings",
    "in_context_attack",
    "ReasoningSettings",
    "reasoning_attack",
    "VariantSettings",
    "variant_attack",
    "MIASettings",
    "membership_inference",
    "RelearnSettings",
    "relearn_attack",
    "EmbeddingSettings",
    "embedding_attack",
    "QuantizeSettings",
    "quantization_attack",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'remnant' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from remnant.attacks.embedding import EmbeddingSettings
    from remnant.attacks.embedding import run as embedding_attack
    from remnant.attacks.in_context import InContextSettings
    from remnant.attacks.in_context import run as in_context_attack
    from remnant.attacks.mia import MIASettings
    from remnant.attacks.mia import run as membership_inference
    from remnant.attacks.quantize import QuantizeSettings
    from remnant.attacks.quantize import run as quantization_attack
    from remnant.attacks.reasoning import ReasoningSettings
    from remnant.attacks.reasoning import run as reasoning_attack
    from remnant.attacks.relearn import RelearnSettings
    from remnant.attacks.relearn import run as relearn_attack
    from remnant.attacks.variants import VariantSettings
    from remnant.attacks.variants import run as variant_attack
    from remnant.concept_vectors.ablate import AblateSettings
    from remnant.concept_vectors.ablate import run as ablate
    from remnant.concept_vectors.compare import CompareSettings
    from remnant.concept_vectors.compare import run as compare
    from remnant.concept_vectors.locate import LocateSettings
    from remnant.concept_vectors.locate import run as locate
    from remnant.concept_vectors.validate import ValidateSettings
    from remnant.concept_vectors.validate import run as validate
    from remnant.errors import RemnantError
    from remnant.models import Model, load_model
    from remnant.probes.lens import LensSettings
    from remnant.probes.lens import run as logit_lens
    from remnant.probes.linear import ProbeSettings
    from remnant.probes.linear import run as probe
    from remnant.results import Result
    from remnant.scoring import evaluate
    from remnant.settings import ScoringSettings
    from remnant.targets import Target, load_target
    from remnant.tracing.causal_trace import TraceSettings
    from remnant.tracing.causal_trace import run as trace
    from remnant.tracing.model_diff import DiffSettings
    from remnant.tracing.model_diff import run as diff
    from remnant.unlearning.unlearn import UnlearningSettings
    from remnant.unlearning.unlearn import run as unlearn
