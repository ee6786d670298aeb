"""Causal tracing (which layers store a fact) and cross-model patching (where unlearning acted)."""

from remnant.errors import TracingError
from remnant.tracing.causal_trace import (
    TOKEN_CLASSES,
    CausalTraceResult,
    TraceSettings,
    causal_trace,
    trace_fact,
)
from remnant.tracing.model_diff import DiffSettings, ModelDiffResult, model_diff
from remnant.tracing.patching import SITE_LABELS, SITES

__all__ = [
    "SITES",
    "SITE_LABELS",
    "TOKEN_CLASSES",
    "CausalTraceResult",
    "DiffSettings",
    "ModelDiffResult",
    "TraceSettings",
    "TracingError",
    "causal_trace",
    "model_diff",
    "trace_fact",
]
