"""Causal tracing (which layers store a fact) and cross-model patching (where unlearning acted).

Run them as `remnant.tracing.causal_trace.run` and `remnant.tracing.model_diff.run`.
"""

from remnant.errors import TracingError
from remnant.tracing import causal_trace, model_diff
from remnant.tracing.causal_trace import (
    TOKEN_CLASSES,
    CausalTraceResult,
    TraceSettings,
    trace_fact,
)
from remnant.tracing.facts import FactSettings
from remnant.tracing.model_diff import DiffSettings, ModelDiffResult
from remnant.tracing.patching import SITE_LABELS, SITES

__all__ = [
    "SITES",
    "SITE_LABELS",
    "TOKEN_CLASSES",
    "CausalTraceResult",
    "DiffSettings",
    "FactSettings",
    "ModelDiffResult",
    "TraceSettings",
    "TracingError",
    "causal_trace",
    "model_diff",
    "trace_fact",
]
