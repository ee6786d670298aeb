"""Training examples from a `Target`: QA items as prompt + answer (scored on the answer tokens)
and passages (scored on every token after the first), batched with right padding."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence

import torch

from remnant.models.model import Model
from remnant.scoring import encode_answers, encode_prompts, format_prompt
from remnant.targets.model import QAItem, Target


@dataclasses.dataclass(frozen=True)
class Example:
    """Token ids; the tokens from position ``start`` on are the ones a likelihood loss scores,
    those from ``own`` on are the example's own text (before it: the prompt template's fixed
    opening, such as a chat system prompt, identical in every QA example)."""

    ids: tuple[int, ...]
    start: int
    own: int = 0


@dataclasses.dataclass(frozen=True)
class Batch:
    """Right-padded examples. ``mask``: real tokens; ``scored``: tokens a likelihood loss scores;
    ``own``: real tokens from each example's own text on."""

    index: list[int]
    ids: torch.Tensor
    mask: torch.Tensor
    scored: torch.Tensor
    own: torch.Tensor


def qa_examples(model: Model, items: Sequence[QAItem], style: str) -> list[Example]:
    """Each question in the prompt layout the scorer uses, followed by its reference answer."""
    prompts = encode_prompts(model, [format_prompt(model, i.question, style) for i in items], style)
    answers = encode_answers(model, [i.answer for i in items], style)
    own = template_opening(model, style)
    return [Example(tuple(p + a), len(p), own) for p, a in zip(prompts, answers)]


def template_opening(model: Model, style: str) -> int:
    """How many leading tokens every formatted prompt shares, whatever the question."""
    first, second = encode_prompts(
        model, [format_prompt(model, q, style) for q in ("Who?", "Where?")], style
    )
    return next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), len(first))


def passage_examples(model: Model, passages: Sequence[str]) -> list[Example]:
    """Passages of at least two tokens (the first has nothing before it to be scored on)."""
    encoded = [tuple(model.tokenizer(p).input_ids) for p in passages]
    return [Example(ids, 1) for ids in encoded if len(ids) > 1]


def split_retain(n_items: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(trained, held out): indices of ``n_items`` retain items, shuffled with ``seed``; the
    held-out part has round(holdout · n) items, at least one and, when n >= 2, at most n - 1
    (a single retain item is held out, so nothing is scored on its own training data)."""
    if n_items == 0:
        return [], []
    n_held = min(max(1, round(holdout * n_items)), max(1, n_items - 1))
    order = random.Random(seed).sample(range(n_items), n_items)
    return sorted(order[n_held:]), sorted(order[:n_held])


def build_examples(
    model: Model,
    target: Target,
    style: str,
    passages: bool,
    retain_items: Sequence[QAItem] | None = None,
) -> tuple[list[Example], list[Example]]:
    """(forget, retain): forget QA (+ forget passages), retain QA (+ unrelated passages).

    ``retain_items`` replaces the target's retain QA items (the trained part of a retain split).
    """
    forget = qa_examples(model, target.forget, style)
    retain_qa = target.retain if retain_items is None else retain_items
    retain = qa_examples(model, retain_qa, style) if retain_qa else []
    if passages:
        forget += passage_examples(model, target.forget_passages)
        retain += passage_examples(model, target.unrelated_passages)
    return forget, retain


def collate(
    examples: Sequence[Example], index: Sequence[int], pad_id: int, device: torch.device
) -> Batch:
    rows = [examples[i] for i in index]
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)
    own = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, : len(row.ids)] = torch.tensor(row.ids)
        mask[b, : len(row.ids)] = 1
        scored[b, row.start : len(row.ids)] = True
        own[b, row.own : len(row.ids)] = True
    return Batch(list(index), ids.to(device), mask.to(device), scored.to(device), own.to(device))


def batches(
    examples: Sequence[Example],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    generator: torch.Generator,
) -> Iterator[Batch]:
    """Endless batches: consecutive slices of passes over the examples, each pass reshuffled."""
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order += torch.randperm(len(examples), generator=generator).tolist()
        index, order = order[:batch_size], order[batch_size:]
        yield collate(examples, index, pad_id, device)


def in_order(
    examples: Sequence[Example], batch_size: int, pad_id: int, device: torch.device
) -> Iterator[Batch]:
    """Every example once, in order (for computing the frozen model's reference values)."""
    for start in range(0, len(examples), batch_size):
        index = list(range(start, min(start + batch_size, len(examples))))
        yield collate(examples, index, pad_id, device)
