"""Settings: declared once, checked once, recorded in every result.

Every settings class is a frozen, keyword-only dataclass derived from `Settings`. What a field
accepts is a `Constraint` (in the manner of scikit-learn's ``_parameter_constraints``): the
fields shared across analyses are constrained in `SHARED`, and a class adds constraints for its
own fields in its ``constraints`` table. All are checked when a settings object is made; a
violation raises `SettingsError` naming the class, the field and what it accepts.

The shared fields themselves are declared once, in `ScoringSettings` (how items are prompted,
batched and scored) and `ContextSettings` (where an answer is read); each analysis's settings
derive from the one it needs and add only their own fields (a subclass may change a default).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from remnant.errors import SettingsError

PromptStyle = Literal["auto", "chat", "plain", "completion"]
PROMPT_STYLES: tuple[str, ...] = ("auto", "chat", "plain", "completion")
AnswerContextKind = Literal["generation", "prompt"]
CONTEXTS: tuple[str, ...] = ("generation", "prompt")


@dataclasses.dataclass(frozen=True)
class Constraint:
    """What one setting accepts."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Interval(Constraint):
    """A number of type ``kind`` (an int is accepted where a float is asked) within
    [``low``, ``high``]; ``open_low`` / ``open_high`` exclude the ends; ``optional`` allows None."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        kinds = (int, float) if self.kind is float else (self.kind,)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        text = noun + (" " + " and ".join(bounds) if bounds else "")
        return text + (" (or None)" if self.optional else "")


@dataclasses.dataclass(frozen=True)
class OneOf(Constraint):
    """One of ``values``; ``optional`` allows None."""

    values: tuple[Any, ...]
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        return (value is None and self.optional) or value in self.values

    def describe(self) -> str:
        listed = ", ".join(repr(v) for v in self.values)
        return f"one of {listed}" + (" (or None)" if self.optional else "")


@dataclasses.dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of ``kind``."""

    kind: type

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.kind)

    def describe(self) -> str:
        return f"a {self.kind.__name__}"


#: Constraints of the settings that several analyses share, by field name.
SHARED: dict[str, Constraint] = {
    "prompt_style": OneOf(PROMPT_STYLES),
    "batch_size": Interval(int, 1),
    "max_new_tokens": Interval(int, 1),
    "n_bootstrap": Interval(int, 1),
    "seed": Interval(int),
    "context": OneOf(CONTEXTS),
    "max_facts": Interval(int, 1, optional=True),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Base class: checks every field against `SHARED` and the ``constraints`` tables of the
    class and its bases when made, then runs `check` for rules that span several fields."""

    constraints: ClassVar[Mapping[str, Constraint]] = {}

    def __post_init__(self) -> None:
        table = dict(SHARED)
        for cls in reversed(type(self).__mro__):
            table.update(vars(cls).get("constraints", {}))
        for field in dataclasses.fields(self):
            constraint = table.get(field.name)
            value = getattr(self, field.name)
            if constraint is not None and not constraint.accepts(value):
                raise SettingsError(
                    f"{type(self).__name__}.{field.name} must be {constraint.describe()}, "
                    f"not {value!r}"
                )
        self.check()

    def check(self) -> None:
        """Rules that span several fields; raise `SettingsError`. None by default."""

    def record(self, **resolved: Any) -> dict[str, Any]:
        """The settings as plain JSON values, with ``resolved`` values (such as the prompt style
        ``auto`` turned into) replacing the asked ones."""
        return _plain(dataclasses.asdict(self)) | resolved


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoringSettings(Settings):
    """How items are prompted, batched and scored."""

    prompt_style: PromptStyle = "auto"
    """``chat``: the question as a user turn of the tokenizer's chat template; ``plain``:
    ``Question: {question}\\nAnswer:``; ``completion``: the question text itself is the prefix
    (cloze statements, fill-in-the-blank probes); ``auto``: chat when the tokenizer has a chat
    template, else plain. In plain and completion style the answer follows after a space."""
    batch_size: int = 16
    """Prompts per forward pass."""
    generation_batch_size: int = 64
    """Prompts per greedy generation batch. Decoding one token reads every weight, so on a
    CPU a step costs nearly the same for 8 rows as for 64: larger batches give more tokens per
    second (``bench/generation_batch.py``)."""
    max_new_tokens: int = 32
    """Greedy generation length, in tokens."""
    n_bootstrap: int = 1000
    """Resamples of every percentile bootstrap 95% confidence interval."""
    seed: int = 0
    """Seed of the bootstrap and of every other random draw the analysis makes."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContextSettings(ScoringSettings):
    """Scoring settings plus where an answer is read."""

    context: AnswerContextKind = "generation"
    """``generation``: where the (original) model states the answer in its own greedy answer
    (`remnant.scoring.answer_contexts`); ``prompt``: right after the prompt."""


def require(condition: bool, message: str) -> None:
    """Raise `SettingsError` with ``message`` unless ``condition`` (for `Settings.check`)."""
    if not condition:
        raise SettingsError(message)
