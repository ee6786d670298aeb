"""Every error a user can cause, in one place. Each mixes in the builtin it refines (a bad value
is also a `ValueError`, an existing output folder a `FileExistsError`), so callers may catch
either. The CLI prints a `RemnantError` as one message and exits with code 2."""

from __future__ import annotations


class RemnantError(Exception):
    """Base class: something the user can fix; the message says what."""


class SettingsError(RemnantError, ValueError):
    """A setting has a value outside what it accepts (the message names the setting)."""


class ResultFormatError(RemnantError, ValueError):
    """Saved results are of another kind or schema version than asked for, or malformed."""


class ModelNotFoundError(RemnantError, FileNotFoundError):
    """A model spec names nothing remnant can load."""


class ModelLoadError(RemnantError, OSError):
    """A model exists but cannot be loaded as asked (pickle, remote code, bad adapter)."""


class ToolchainError(RemnantError, RuntimeError):
    """The installed torch / transformers / TransformerLens compute a model wrongly."""


class ResumeError(ToolchainError):
    """Resuming a forward at a block does not reproduce the model's full forward."""


class IncompatibleModelsError(RemnantError, ValueError):
    """Two models cannot be compared unit by unit (different architecture, sizes or tokenizer)."""


class TargetError(RemnantError, ValueError):
    """A target file is missing, malformed, or of an unknown format."""


class AnswerTokenizationError(TargetError):
    """An answer tokenises to nothing with the model's tokenizer."""


class NothingKnownError(RemnantError, ValueError):
    """The original model answers none of the forget items, so nothing can be audited."""


class OutputExistsError(RemnantError, FileExistsError):
    """An output path exists and overwriting was not asked for."""


class TracingError(RemnantError, ValueError):
    """Tracing cannot run as asked: no item to trace names its subject (``subject``, or a target
    keyword in the question) and none holds a name-like span to infer one from. Giving the items
    a ``subject`` fixes it."""


class ConceptVectorError(RemnantError, ValueError):
    """Concept vectors cannot be found or edited as asked (bad layer/index, nothing located)."""


class UnsupportedArchitectureError(ConceptVectorError, NotImplementedError):
    """The model has no Llama-style MLP down-projection, final RMSNorm or output embedding."""


class UnlearningError(RemnantError, ValueError):
    """An unknown method, a bad hyperparameter, or a target with nothing to train on."""


class RetrainUnavailableError(UnlearningError):
    """Exact unlearning by retraining exists only for the tiny synthetic model and its target."""
