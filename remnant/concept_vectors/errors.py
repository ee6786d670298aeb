"""Errors a user can cause with concept vectors (candidates for ``remnant.errors``)."""

from __future__ import annotations

from remnant.errors import RemnantError


class ConceptVectorError(RemnantError):
    """Concept vectors cannot be found or edited as asked (bad layer/index, bad settings)."""


class UnsupportedArchitectureError(ConceptVectorError):
    """The model has no Llama-style MLP down-projection, final RMSNorm or output embedding."""
