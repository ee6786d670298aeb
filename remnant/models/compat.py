"""Whether two models can be compared unit by unit: the audit's original/unlearned pairs."""

from __future__ import annotations

from remnant.errors import IncompatibleModelsError
from remnant.models.model import Model


def check_compatible(original: Model, other: Model, purpose: str) -> None:
    """Raise `IncompatibleModelsError` unless both models share architecture, sizes, tokenizer
    and chat template, as a fine-tuned copy does. ``purpose`` completes "cannot ... between"."""
    problems = []
    if type(original.hf_model).__name__ != type(other.hf_model).__name__:
        problems.append(
            f"architectures {type(original.hf_model).__name__} vs {type(other.hf_model).__name__}"
        )
    for attr in ("n_layers", "d_model", "d_mlp"):
        if getattr(original, attr) != getattr(other, attr):
            problems.append(f"{attr} {getattr(original, attr)} vs {getattr(other, attr)}")
    if original.tokenizer.get_vocab() != other.tokenizer.get_vocab():
        problems.append("different tokenizer vocabularies")
    if getattr(original.tokenizer, "chat_template", None) != getattr(
        other.tokenizer, "chat_template", None
    ):
        problems.append("different chat templates")
    if problems:
        raise IncompatibleModelsError(
            f"cannot {purpose} between {original.name} and {other.name}: {'; '.join(problems)}. "
            "Compare an unlearned model with the original it was made from (same architecture, "
            "sizes and tokenizer)"
        )
