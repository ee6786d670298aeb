"""Behavioural scoring: answer log-probability, greedy generation with alias match, ROUGE-L
recall, multiple choice (answer letter and full-choice likelihood), bootstrap CIs.

Everything runs batched through ``subject.hf_model``, which the TransformerLens bridge wraps in
place, so hooks added with ``subject.bridge.hooks(...)`` act on every score computed here.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch

from remnant.errors import AnswerTokenizationError, NothingKnownError, RemnantError
from remnant.models.subject import Subject
from remnant.results import Result
from remnant.targets.model import MCQItem, QAItem, Target

PromptStyle = Literal["auto", "chat", "plain"]
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"
MCQ_INSTRUCTION = "Answer with the letter of the correct option."


@dataclasses.dataclass(frozen=True)
class ScoringSettings:
    """How items are prompted and scored; recorded in every result."""

    prompt_style: PromptStyle = "auto"
    batch_size: int = 16
    max_new_tokens: int = 32
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt_style not in ("auto", "chat", "plain"):
            raise RemnantError(
                f"prompt style must be auto, chat or plain, not {self.prompt_style!r}"
            )
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise RemnantError("batch size and max new tokens must be at least 1")


# ---------------------------------------------------------------- prompts


def resolve_style(subject: Subject, style: PromptStyle) -> Literal["chat", "plain"]:
    """``auto`` means the chat template when the tokenizer has one, else the plain layout."""
    has_template = bool(getattr(subject.tokenizer, "chat_template", None))
    if style == "chat" and not has_template:
        raise RemnantError(f"{subject.name} has no chat template; use prompt style 'plain'")
    if style == "auto":
        return "chat" if has_template else "plain"
    return style


def format_prompt(subject: Subject, question: str, style: Literal["chat", "plain"]) -> str:
    """The text before the answer: a chat turn awaiting the assistant, or ``Question: … Answer:``."""
    if style == "chat":
        return subject.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return PLAIN_TEMPLATE.format(question=question)


def encode_prompts(subject: Subject, prompts: Sequence[str], style: str) -> list[list[int]]:
    """Token ids of formatted prompts (chat templates carry their own special tokens)."""
    add_special = style == "plain"
    return [subject.tokenizer(p, add_special_tokens=add_special).input_ids for p in prompts]


def encode_answers(subject: Subject, answers: Sequence[str], style: str) -> list[list[int]]:
    """Answer token ids as they follow the prompt: after a space in plain style, directly in chat."""
    prefix = " " if style == "plain" else ""
    encoded = [subject.tokenizer(prefix + a, add_special_tokens=False).input_ids for a in answers]
    for answer, ids in zip(answers, encoded):
        if not subject.tokenizer.decode(ids, skip_special_tokens=True).strip():
            raise AnswerTokenizationError(
                f"answer {answer!r} tokenises to nothing with {subject.name}'s tokenizer; "
                "give it visible text"
            )
    return encoded


# ---------------------------------------------------------------- batched model calls


def _batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped by similar length (less padding), in batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _pad(
    rows: Sequence[Sequence[int]], pad_id: int, side: str
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def sequence_logprobs(
    subject: Subject,
    prompt_ids: Sequence[Sequence[int]],
    continuation_ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    padding_side: str = "right",
) -> list[np.ndarray]:
    """Per-token log-probabilities (natural log) of each continuation given its prompt."""
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, continuation_ids)]
    out: list[np.ndarray] = [np.zeros(0)] * len(rows)
    pad_id = subject.tokenizer.pad_token_id
    for batch in _batches([len(r) for r in rows], batch_size):
        ids, mask = _pad([rows[i] for i in batch], pad_id, padding_side)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = subject.hf_model(
                input_ids=ids.to(subject.device),
                attention_mask=mask.to(subject.device),
                position_ids=positions.to(subject.device),
            ).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        for row, i in enumerate(batch):
            n_prompt, n_cont = len(prompt_ids[i]), len(continuation_ids[i])
            offset = ids.shape[1] - len(rows[i]) if padding_side == "left" else 0
            start = offset + n_prompt - 1
            targets = ids[row, start + 1 : start + 1 + n_cont].to(logprobs.device)
            picked = logprobs[row, start : start + n_cont].gather(-1, targets[:, None])[:, 0]
            out[i] = picked.cpu().numpy().astype(np.float64)
    return out


def generate(
    subject: Subject,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations (special tokens removed) of already-encoded prompts."""
    tokenizer = subject.tokenizer
    out = [""] * len(prompt_ids)
    for batch in _batches([len(p) for p in prompt_ids], batch_size):
        ids, mask = _pad([prompt_ids[i] for i in batch], tokenizer.pad_token_id, "left")
        with torch.no_grad():
            generated = subject.hf_model.generate(
                input_ids=ids.to(subject.device),
                attention_mask=mask.to(subject.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row, i in enumerate(batch):
            out[i] = tokenizer.decode(
                generated[row, ids.shape[1] :], skip_special_tokens=True
            ).strip()
    return out


@dataclasses.dataclass(frozen=True)
class AnswerContext:
    """Where an answer is read: the token ids that precede it, the answer's first token, and
    the generated text the prompt was extended by ("" when read right after the prompt)."""

    ids: tuple[int, ...]
    answer_id: int
    extension: str


def answer_contexts(
    subject: Subject,
    items: Sequence[QAItem],
    style: str,
    *,
    from_generation: bool = True,
    generations: Sequence[str] | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> list[AnswerContext]:
    """Per item, the position at which the model states the answer.

    Chat models seldom answer with the bare answer ("The capital is Paris."), so the first
    token of the reference answer right after the prompt is unlikely even when the model knows
    it. With ``from_generation`` the prompt is extended by the model's own greedy answer up to
    the first accepted answer in it; items whose generation holds no accepted answer (and
    every item without ``from_generation``) are read right after the prompt, against the
    reference answer. Leading whitespace-only answer tokens are moved into the context.
    ``generations`` (one per item) are greedy answers already made, e.g. by
    `known_forget_generations`; without them the model generates ``max_new_tokens``.
    """
    tokenizer = subject.tokenizer
    prompts = encode_prompts(
        subject, [format_prompt(subject, i.question, style) for i in items], style
    )
    answers = encode_answers(subject, [i.answer for i in items], style)
    extensions = [""] * len(items)
    if from_generation:
        texts = generations
        if texts is None:
            texts = generate(subject, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        elif len(texts) != len(items):
            raise RemnantError(f"{len(texts)} generations for {len(items)} items")
        for k, (item, text) in enumerate(zip(items, texts)):
            span = _first_answer(text, item.accepted_answers)
            if span is None:
                continue
            prefix, answer = text[: span[0]], text[span[0] : span[1]]
            if prefix.endswith(" ") or (not prefix and style == "plain"):
                prefix, answer = prefix[:-1], " " + answer
            prompts[k] = prompts[k] + tokenizer(prefix, add_special_tokens=False).input_ids
            answers[k] = tokenizer(answer, add_special_tokens=False).input_ids
            extensions[k] = prefix
    for prompt, answer in zip(prompts, answers):
        while len(answer) > 1 and not tokenizer.decode(answer[:1]).strip():
            prompt.append(answer.pop(0))
    return [AnswerContext(tuple(p), a[0], e) for p, a, e in zip(prompts, answers, extensions)]


def _first_answer(text: str, accepted: Sequence[str]) -> tuple[int, int] | None:
    """Character span of the earliest accepted answer in ``text`` (whole words, any case)."""
    spans = [
        match.span()
        for answer in accepted
        if (match := re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, re.IGNORECASE))
    ]
    return min(spans) if spans else None


def next_token_logits(
    subject: Subject, prompt_ids: Sequence[Sequence[int]], *, batch_size: int = 16
) -> torch.Tensor:
    """Logits of the token that would follow each prompt, shape (n_prompts, vocab)."""
    out = []
    order: list[int] = []
    for batch in _batches([len(p) for p in prompt_ids], batch_size):
        ids, mask = _pad([prompt_ids[i] for i in batch], subject.tokenizer.pad_token_id, "left")
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = (
                subject.hf_model(
                    input_ids=ids.to(subject.device),
                    attention_mask=mask.to(subject.device),
                    position_ids=positions.to(subject.device),
                )
                .logits[:, -1]
                .float()
                .cpu()
            )
        out.append(logits)
        order += batch
    stacked = torch.cat(out)
    return stacked[torch.argsort(torch.tensor(order))]


# ---------------------------------------------------------------- text matching


def normalize(text: str) -> str:
    """Lowercase, every non-alphanumeric character to a space, whitespace collapsed."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def alias_match(generation: str, accepted: Sequence[str]) -> bool:
    """True when any accepted answer occurs in the generation as a whole-word span."""
    padded = f" {normalize(generation)} "
    return any(normalize(a) and f" {normalize(a)} " in padded for a in accepted)


def rouge_l_recall(reference: str, generation: str) -> float:
    """Longest common word subsequence of reference and generation / reference length."""
    ref, gen = normalize(reference).split(), normalize(generation).split()
    if not ref:
        return 0.0
    previous = [0] * (len(gen) + 1)
    for r in ref:
        current = [0]
        for j, g in enumerate(gen):
            current.append(previous[j] + 1 if r == g else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1] / len(ref)


# ---------------------------------------------------------------- statistics


def bootstrap_ci(
    values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; (None, None) for no values."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (None, None)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (round(float(low), 6), round(float(high), 6))


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 6) if len(values) else None


# ---------------------------------------------------------------- QA and MCQ scoring


def score_qa(
    subject: Subject, items: Sequence[QAItem], settings: ScoringSettings = ScoringSettings()
) -> dict[str, Any]:
    """Greedy accuracy (alias match) over all items and over answered items (non-empty
    generation), mean answer log-probability (nats, summed and per token) and ROUGE-L recall."""
    style = resolve_style(subject, settings.prompt_style)
    prompts = encode_prompts(
        subject, [format_prompt(subject, i.question, style) for i in items], style
    )
    answers = encode_answers(subject, [i.answer for i in items], style)
    logprobs = sequence_logprobs(subject, prompts, answers, batch_size=settings.batch_size)
    generations = generate(
        subject, prompts, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size
    )
    rows = []
    for item, lp, text in zip(items, logprobs, generations):
        rows.append(
            {
                "question": item.question,
                "answer": item.answer,
                "generation": text,
                "correct": alias_match(text, item.accepted_answers),
                "answered": bool(normalize(text)),
                "logprob_sum": round(float(lp.sum()), 6),
                "logprob_mean": round(float(lp.mean()), 6),
                "n_answer_tokens": int(lp.size),
                "rouge_l_recall": round(rouge_l_recall(item.answer, text), 6),
            }
        )
    return _summarise(rows, settings)


def _summarise(rows: list[dict[str, Any]], settings: ScoringSettings) -> dict[str, Any]:
    correct = [float(r["correct"]) for r in rows]
    answered = [float(r["correct"]) for r in rows if r["answered"]]
    return {
        "n": len(rows),
        "accuracy": _mean(correct),
        "ci": list(bootstrap_ci(correct, n_resamples=settings.n_bootstrap, seed=settings.seed)),
        "n_answered": len(answered),
        "answered_accuracy": _mean(answered),
        "answered_ci": list(
            bootstrap_ci(answered, n_resamples=settings.n_bootstrap, seed=settings.seed)
        ),
        "mean_logprob_sum": _mean([r["logprob_sum"] for r in rows]),
        "mean_logprob_per_token": _mean([r["logprob_mean"] for r in rows]),
        "mean_rouge_l_recall": _mean([r["rouge_l_recall"] for r in rows]),
        "items": rows,
    }


def mcq_prompt(item: MCQItem) -> str:
    options = "\n".join(f"{string.ascii_uppercase[k]}. {c}" for k, c in enumerate(item.choices))
    return f"{item.question}\n{options}\n{MCQ_INSTRUCTION}"


def score_mcq(
    subject: Subject, items: Sequence[MCQItem], settings: ScoringSettings = ScoringSettings()
) -> dict[str, Any]:
    """Multiple choice two ways. By letter: argmax of the option letters' next-token logits;
    an item counts as answered when the top token over the whole vocabulary is an option
    letter. By likelihood: the choice with the highest mean per-token log-probability."""
    style = resolve_style(subject, settings.prompt_style)
    letter_prompts = encode_prompts(
        subject, [format_prompt(subject, mcq_prompt(i), style) for i in items], style
    )
    logits = next_token_logits(subject, letter_prompts, batch_size=settings.batch_size)
    prefix = " " if style == "plain" else ""
    letter_ids = [
        subject.tokenizer(prefix + L, add_special_tokens=False).input_ids[0]
        for L in string.ascii_uppercase
    ]
    question_prompts = encode_prompts(
        subject, [format_prompt(subject, i.question, style) for i in items], style
    )
    flat_prompts, flat_choices, owner = [], [], []
    for k, item in enumerate(items):
        choice_ids = encode_answers(subject, item.choices, style)
        flat_prompts += [question_prompts[k]] * len(choice_ids)
        flat_choices += choice_ids
        owner += [k] * len(choice_ids)
    choice_lp = sequence_logprobs(
        subject, flat_prompts, flat_choices, batch_size=settings.batch_size
    )
    rows = []
    for k, item in enumerate(items):
        ids = letter_ids[: len(item.choices)]
        letter_pred = int(torch.argmax(logits[k, ids]))
        means = [float(lp.mean()) for lp, o in zip(choice_lp, owner) if o == k]
        likelihood_pred = int(np.argmax(means))
        rows.append(
            {
                "question": item.question,
                "answer": item.answer,
                "letter_prediction": letter_pred,
                "correct": letter_pred == item.answer,
                "answered": int(torch.argmax(logits[k])) in ids,
                "likelihood_prediction": likelihood_pred,
                "likelihood_correct": likelihood_pred == item.answer,
                "choice_logprob_mean": [round(m, 6) for m in means],
            }
        )
    correct = [float(r["correct"]) for r in rows]
    answered = [float(r["correct"]) for r in rows if r["answered"]]
    likelihood = [float(r["likelihood_correct"]) for r in rows]
    ci = dict(n_resamples=settings.n_bootstrap, seed=settings.seed)
    return {
        "n": len(rows),
        "accuracy": _mean(correct),
        "ci": list(bootstrap_ci(correct, **ci)),
        "n_answered": len(answered),
        "answered_accuracy": _mean(answered),
        "answered_ci": list(bootstrap_ci(answered, **ci)),
        "likelihood_accuracy": _mean(likelihood),
        "likelihood_ci": list(bootstrap_ci(likelihood, **ci)),
        "chance": _mean([1 / len(i.choices) for i in items]),
        "items": rows,
    }


# ---------------------------------------------------------------- whole-target evaluation


@dataclasses.dataclass(frozen=True)
class EvalResult(Result):
    """Behavioural scores of one model on one target, split by forget / retain / mcq."""

    model: dict[str, Any]
    target: str
    settings: dict[str, Any]
    splits: dict[str, Any]


def evaluate(
    subject: Subject, target: Target, settings: ScoringSettings = ScoringSettings()
) -> EvalResult:
    """Score the forget and retain QA items (and MCQ items, if any) of ``target``."""
    splits: dict[str, Any] = {}
    for split in ("forget", "retain"):
        items = getattr(target, split)
        if items:
            splits[split] = score_qa(subject, items, settings)
    if target.mcq:
        splits["mcq"] = score_mcq(subject, target.mcq, settings)
    recorded = dataclasses.asdict(settings) | {
        "prompt_style": resolve_style(subject, settings.prompt_style)
    }
    return EvalResult(subject.identity(), target.name, recorded, splits)


def known_forget_items(
    subject: Subject, target: Target, settings: ScoringSettings = ScoringSettings()
) -> list[QAItem]:
    """The forget items ``subject`` answers correctly; raises when there are none."""
    return [item for item, _ in known_forget_generations(subject, target, settings)]


def known_forget_generations(
    subject: Subject, target: Target, settings: ScoringSettings = ScoringSettings()
) -> list[tuple[QAItem, str]]:
    """The forget items ``subject`` answers correctly, each with the greedy generation that
    answered it; raises when there are none."""
    scored = score_qa(subject, target.forget, settings)["items"] if target.forget else []
    known = [
        (item, row["generation"]) for item, row in zip(target.forget, scored) if row["correct"]
    ]
    if not known:
        raise NothingKnownError(
            f"{subject.name} answers none of the {len(target.forget)} forget items of target "
            f"{target.name!r}, so there is no knowledge to audit; check the target's answers, the "
            "prompt style, or that this is the original (not the unlearned) model"
        )
    return known
