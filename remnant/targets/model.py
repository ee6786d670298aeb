"""The `Target`: what an unlearning method was supposed to make the model forget."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from remnant.errors import TargetError

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

#: How a greedy generation is judged correct for a QA item (see `QAItem.match`).
MatchMode = Literal["alias", "rouge_l"]

_STRIPPED = TypeAdapter(Annotated[str, StringConstraints(strip_whitespace=True)])


def strip_text(value: str) -> str:
    """``value`` as a `Target` stores it (stripped exactly as `Text` strips; "" when nothing
    is left). Loaders that generate anything from a text use this, so that what they generate
    from is what is stored and scored."""
    return _STRIPPED.validate_python(value)


class Variant(BaseModel):
    """Another way of asking a QA item: a paraphrase, a translation, a reverse question, an
    adversarial probe (RWKU's level 3), scored against the item asked plainly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Text
    """What kind of variant this is, free text ("paraphrase", "translation", "reverse query",
    or one of RWKU's adversarial probe types such as "prefix injection"); results are broken
    down by it."""
    question: Text
    """The variant's question (the whole prompt text of an RWKU probe)."""
    answer: Text | None = None
    """Its reference answer; None: the item's answer (and the item's aliases)."""
    aliases: tuple[Text, ...] = ()
    """Further accepted phrasings of its answer (added to the item's when `answer` is None)."""

    def as_item(self, base: QAItem) -> QAItem:
        """The variant as a QA item of its own, made from the item ``base`` it varies: this
        question, this answer (else the base's), judged by the base's match mode, naming the
        base's subject only where the question contains it."""
        if self.answer is None:
            answer, aliases = base.answer, (*base.aliases, *self.aliases)
        else:
            answer, aliases = self.answer, self.aliases
        subject = base.subject if base.subject and base.subject in self.question else None
        return QAItem(
            question=self.question,
            answer=answer,
            aliases=aliases,
            subject=subject,
            group=base.group,
            match=base.match,
        )


class QAItem(BaseModel):
    """A question with its reference answer, accepted variants and the span naming its subject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: Text
    """The question (in the ``completion`` prompt style: the text the answer continues)."""
    answer: Text
    """The reference answer."""
    aliases: tuple[Text, ...] = ()
    """Other accepted phrasings of the answer (used by the ``alias`` match)."""
    subject: Text | None = None
    """The span of the question naming the entity the fact is about (None: the first of the
    target's keywords found in the question; when none is, causal tracing infers the span from
    the question's capitalised names, `remnant.tracing.infer_subject`). Setting it overrides
    both."""
    group: Text | None = None
    """A label to break scores down by (attribute, RWKU level and type, ...)."""
    match: MatchMode = "alias"
    """How a greedy generation is judged correct (`remnant.scoring.is_correct`): ``alias``: an
    accepted answer (`answer` or an alias) occurs in the generation as a whole-word span;
    ``rouge_l``: the ROUGE-L recall of `answer` against the generation is at least
    `remnant.scoring.ROUGE_L_THRESHOLD`, for long free-text answers (such as a model's own
    greedy answers, which ConceptVectors targets use as references) that rarely recur word for
    word."""
    variants: tuple[Variant, ...] = ()
    """Other ways of asking this item (paraphrases, translations, reverse questions, RWKU's
    adversarial probes), each with its `Variant.type`; the ``variants`` attack scores them."""

    @model_validator(mode="after")
    def _subject_in_question(self) -> QAItem:
        if self.subject is not None and self.subject not in self.question:
            raise ValueError(
                f"subject {self.subject!r} does not occur in question {self.question!r}"
            )
        return self

    @property
    def accepted_answers(self) -> tuple[str, ...]:
        """The reference answer followed by its aliases, without repeats."""
        return tuple(dict.fromkeys((self.answer, *self.aliases)))


class MCQItem(BaseModel):
    """A multiple-choice question; `answer` is the 0-based index of the correct choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: Text
    choices: tuple[Text, ...] = Field(min_length=2, max_length=26)
    answer: int = Field(ge=0)

    @model_validator(mode="after")
    def _answer_in_range(self) -> MCQItem:
        if self.answer >= len(self.choices):
            raise ValueError(
                f"answer index {self.answer} is out of range for {len(self.choices)} choices"
            )
        if len(set(self.choices)) != len(self.choices):
            raise ValueError("choices must be distinct")
        return self


class Target(BaseModel):
    """What should be forgotten (forget items, MCQ, passages) and what should be kept (retain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    description: str = ""
    keywords: tuple[Text, ...] = ()
    forget: tuple[QAItem, ...] = ()
    retain: tuple[QAItem, ...] = ()
    mcq: tuple[MCQItem, ...] = ()
    forget_passages: tuple[Text, ...] = ()
    unrelated_passages: tuple[Text, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        if not self.forget and not self.mcq:
            raise ValueError("a target needs at least one forget item or multiple-choice item")
        for split in ("forget", "retain"):
            _reject_duplicates(split, [item.question for item in getattr(self, split)])
        _reject_duplicates("mcq", [item.question for item in self.mcq])
        shared = {i.question for i in self.forget} & {i.question for i in self.retain}
        if shared:
            raise ValueError(f"questions in both forget and retain: {sorted(shared)[:3]}")
        return self

    def subject_of(self, item: QAItem) -> str | None:
        """The span naming the item's subject: its own, else the first keyword found in the
        question, else None (causal tracing then infers one: `remnant.tracing.infer_subject`)."""
        if item.subject is not None:
            return item.subject
        for keyword in self.keywords:
            match = re.search(re.escape(keyword), item.question, flags=re.IGNORECASE)
            if match:
                return match.group(0)
        return None

    @classmethod
    def from_data(cls, data: Any, source: str = "target") -> Target:
        """Validate plain data (as read from YAML/JSON); problems raise `TargetError`."""
        if not isinstance(data, dict):
            raise TargetError(
                f"{source}: expected a mapping with 'name' and 'forget', got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise TargetError(_describe(exc, source)) from None


def _reject_duplicates(split: str, questions: list[str]) -> None:
    seen: set[str] = set()
    for question in questions:
        if question in seen:
            raise ValueError(f"duplicate {split} question: {question!r}")
        seen.add(question)


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is not a valid target ({exc.error_count()} problem(s)):"]
    for error in exc.errors()[:10]:
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  - {where}: {error['msg']}")
    return "\n".join(lines)
