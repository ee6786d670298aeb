"""Errors a user can cause. The CLI prints them as one message and exits with code 2."""

from __future__ import annotations


class RemnantError(Exception):
    """Base class: something the user can fix; the message says what."""


class ModelNotFoundError(RemnantError):
    """A model spec names nothing remnant can load."""


class ModelLoadError(RemnantError):
    """A model exists but cannot be loaded as asked (pickle, remote code, bad adapter)."""


class TargetError(RemnantError):
    """A target file is missing, malformed, or of an unknown format."""


class AnswerTokenizationError(TargetError):
    """An answer tokenises to nothing with the model's tokenizer."""


class NothingKnownError(RemnantError):
    """The original model answers none of the forget items, so nothing can be audited."""


class OutputExistsError(RemnantError):
    """An output path exists and overwriting was not asked for."""


class IncompatibleModelsError(RemnantError):
    """Two models cannot be compared unit by unit (different architecture, sizes or tokenizer)."""


class ToolchainError(RemnantError):
    """The installed torch / transformers / TransformerLens compute a model wrongly."""
