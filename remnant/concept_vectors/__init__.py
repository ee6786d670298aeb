"""Concept vectors (Hong et al., ConceptVectors): MLP value vectors whose vocabulary projection is
dominated by the concept. Locate them, validate them causally, compare them between an original
and an unlearned model, and ablate them directly in a checkpoint."""

from remnant.concept_vectors.ablate import REPORT_FILE, AblateResult, ablate, ablate_subject
from remnant.concept_vectors.compare import CompareResult, CompareSettings, compare
from remnant.concept_vectors.interventions import MODES, edit_weights, intervention_hooks
from remnant.concept_vectors.locate import LocateResult, LocateSettings, locate
from remnant.concept_vectors.tokens import TokenSets, token_sets
from remnant.concept_vectors.validate import ValidateResult, ValidateSettings, validate
from remnant.concept_vectors.vectors import VectorRef
from remnant.errors import (
    ConceptVectorError,
    UnsupportedArchitectureError,
)

__all__ = [
    "MODES",
    "REPORT_FILE",
    "AblateResult",
    "CompareResult",
    "CompareSettings",
    "ConceptVectorError",
    "LocateResult",
    "LocateSettings",
    "TokenSets",
    "UnsupportedArchitectureError",
    "ValidateResult",
    "ValidateSettings",
    "VectorRef",
    "ablate",
    "ablate_subject",
    "compare",
    "edit_weights",
    "intervention_hooks",
    "locate",
    "token_sets",
    "validate",
]
