"""Concept vectors (Hong et al., ConceptVectors): MLP value vectors whose vocabulary projection is
dominated by the concept. Locate them (`locate.run`), validate them causally (`validate.run`),
compare them between an original and an unlearned model (`compare.run`), and ablate them
directly in a new checkpoint (`ablate.run`)."""

from remnant.concept_vectors.ablate import REPORT_FILE, AblateResult, AblateSettings
from remnant.concept_vectors.compare import CompareResult, CompareSettings
from remnant.concept_vectors.interventions import MODES, edit_weights, intervention_hooks
from remnant.concept_vectors.locate import LocateResult, LocateSettings
from remnant.concept_vectors.tokens import TokenSets, token_sets
from remnant.concept_vectors.validate import ValidateResult, ValidateSettings
from remnant.concept_vectors.vectors import VectorRef

__all__ = [
    "MODES",
    "REPORT_FILE",
    "AblateResult",
    "AblateSettings",
    "CompareResult",
    "CompareSettings",
    "LocateResult",
    "LocateSettings",
    "TokenSets",
    "ValidateResult",
    "ValidateSettings",
    "VectorRef",
    "edit_weights",
    "intervention_hooks",
    "token_sets",
]
