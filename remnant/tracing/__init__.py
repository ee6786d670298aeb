"""Causal tracing (which layers store a fact) and cross-model patching (where unlearning acted).

Run them as `remnant.tracing.causal_trace.run` and `remnant.tracing.model_diff.run`.
"""

from remnant.errors import TracingError
from remnant.tracing import causal_trace, model_diff
from remnant.tracing.causal_trace import (
    TOKEN_CLASSES,
    CausalTraceResult,
    SubjectSource,
    TraceSettings,
    infer_subject,
    trace_fact,
)
from remnant.tracing.facts import FactSettings
from remnant.tracing.model_diff import DiffSettings, ModelDiffResult
from remnant.tracing.patching import SITE_LABELS, SITES
from remnant.tracing.subjects import subject_candidates

__all__ = [
    "SITES",
    "SITE_LABELS",
    "TOKEN_CLASSES",
    "CausalTraceResult",
    "DiffSettings",
    "FactSettings",
    "ModelDiffResult",
    "SubjectSource",
    "TraceSettings",
    "TracingError",
    "causal_trace",
    "infer_subject",
    "model_diff",
    "subject_candidates",
    "trace_fact",
]
