"""Logit lens: read every layer's residual stream through the model's own final norm and
unembedding, at the token just before each forget answer.

For each forget item and residual layer (embedding output, then every block output) it records
the rank (1 = the top token) and probability of the answer's first token, for the original and
the unlearned model, read at the same token ids. An answer that ranks high at middle layers and
low at the output was suppressed near the output rather than removed (nostalgebraist, 2020;
Patil et al., 2023). Applied to the last block's output, the readout equals the model's real
next-token logits.

Where to read: chat models seldom answer with the bare answer ("The river is the Seine."), so
with ``context="generation"`` the prompt is extended by the original model's own greedy answer
up to the first accepted answer in it, and the lens reads the next token there; items whose
generation holds no accepted answer (and every item with ``context="prompt"``) are read at the
end of the prompt, against the reference answer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from remnant.errors import RemnantError, TargetError
from remnant.models.subject import Subject
from remnant.probes.activations import EncodedPrompt, extract, hook_names
from remnant.results import Result
from remnant.scoring import (
    PromptStyle,
    encode_answers,
    encode_prompts,
    format_prompt,
    generate,
    resolve_style,
)
from remnant.targets.model import QAItem, Target


@dataclasses.dataclass(frozen=True)
class LensSettings:
    """Where the lens reads (see the module docstring), prompting and batching; recorded."""

    context: Literal["generation", "prompt"] = "generation"
    prompt_style: PromptStyle = "auto"
    max_new_tokens: int = 32
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.context not in ("generation", "prompt"):
            raise RemnantError(f"lens context must be generation or prompt, not {self.context!r}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise RemnantError("batch_size and max_new_tokens must be at least 1")


@dataclasses.dataclass(frozen=True)
class LensResult(Result):
    """Rank (1 = top token) and probability of each forget answer's first token per layer.

    ``layers[i]`` names the hook of layer index ``i`` (0 = embedding output). Each entry of
    ``items`` holds the question, answer, ``context`` (the generated text the prompt was
    extended by; empty when read at the end of the prompt), ``answer_token`` (the token read)
    and, per model, the per-layer ``{model}_rank`` and ``{model}_prob``. ``summary[model]``
    holds per-layer ``median_rank``, ``mean_prob`` and ``top1`` (fraction of items whose answer
    token ranks first).
    """

    original: dict[str, Any]
    unlearned: dict[str, Any]
    target: str
    settings: dict[str, Any]
    layers: list[str]
    items: list[dict[str, Any]]
    summary: dict[str, dict[str, list[float]]]


def lens_logits(subject: Subject, resid: torch.Tensor) -> torch.Tensor:
    """Logits (float32, ``(..., vocab)``) of residual-stream vectors ``(..., d_model)`` through the
    model's final norm and unembedding."""
    bridge = subject.bridge
    with torch.no_grad():
        return bridge.unembed(bridge.ln_final(resid.to(subject.device))).float().cpu()


def answer_ranks(
    subject: Subject, resid: np.ndarray, token_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rank (1 = top) and probability of ``token_ids[i]`` read from ``resid[i, layer]``.

    ``resid`` is (n_items, n_layers, d_model); both outputs are (n_items, n_layers).
    """
    targets = torch.tensor(list(token_ids))[:, None]
    ranks, probs = [], []
    for layer in range(resid.shape[1]):
        logits = lens_logits(subject, torch.from_numpy(resid[:, layer]))
        chosen = logits.gather(-1, targets)
        ranks.append((logits > chosen).sum(-1) + 1)
        probs.append(torch.softmax(logits, dim=-1).gather(-1, targets)[:, 0])
    return torch.stack(ranks, 1).numpy(), torch.stack(probs, 1).double().numpy()


def analyze(
    original: Subject,
    unlearned: Subject,
    target: Target,
    settings: LensSettings = LensSettings(),
) -> LensResult:
    """Logit-lens rank and probability of every forget answer at every layer of both models."""
    if not target.forget:
        raise TargetError(
            f"the logit lens reads forget QA items and target {target.name!r} has none; "
            "add `forget:` items with answers"
        )
    if original.n_layers != unlearned.n_layers or (
        original.tokenizer.get_vocab() != unlearned.tokenizer.get_vocab()
    ):
        raise RemnantError(
            f"{original.name} and {unlearned.name} differ in layers or vocabulary; compare an "
            "unlearned model with the original it came from"
        )
    style = resolve_style(original, settings.prompt_style)
    contexts, answer_ids, extensions = _contexts(original, target.forget, style, settings)
    names = hook_names(original, "resid")
    readouts = {}
    for key, subject in (("original", original), ("unlearned", unlearned)):
        acts = extract(subject, contexts, names, batch_size=settings.batch_size)
        resid = np.stack([acts[n] for n in names], axis=1)
        readouts[key] = answer_ranks(subject, resid, answer_ids)
    items = []
    for k, item in enumerate(target.forget):
        row: dict[str, Any] = {
            "question": item.question,
            "answer": item.answer,
            "context": extensions[k],
            "answer_token": original.tokenizer.decode([answer_ids[k]]),
        }
        for key, (ranks, probs) in readouts.items():
            row[f"{key}_rank"] = [int(r) for r in ranks[k]]
            row[f"{key}_prob"] = [round(float(p), 6) for p in probs[k]]
        items.append(row)
    summary = {
        key: {
            "median_rank": [float(np.median(col)) for col in ranks.T],
            "mean_prob": [round(float(col.mean()), 6) for col in probs.T],
            "top1": [round(float((col == 1).mean()), 6) for col in ranks.T],
        }
        for key, (ranks, probs) in readouts.items()
    }
    recorded = dataclasses.asdict(settings) | {"prompt_style": style}
    return LensResult(
        original.identity(), unlearned.identity(), target.name, recorded, names, items, summary
    )


def _contexts(
    subject: Subject, items: Sequence[QAItem], style: str, settings: LensSettings
) -> tuple[list[EncodedPrompt], list[int], list[str]]:
    """Per item: the token ids to read at, the answer token expected next, and the generated
    text the prompt was extended by ("" when read at the end of the prompt)."""
    tokenizer = subject.tokenizer
    prompts = encode_prompts(
        subject, [format_prompt(subject, i.question, style) for i in items], style
    )
    answers = encode_answers(subject, [i.answer for i in items], style)
    extensions = [""] * len(items)
    if settings.context == "generation":
        texts = generate(
            subject,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
        )
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
    for prompt, answer in zip(prompts, answers):  # a bare space token says nothing: skip it
        while len(answer) > 1 and not tokenizer.decode(answer[:1]).strip():
            prompt.append(answer.pop(0))
    return [EncodedPrompt(tuple(p)) for p in prompts], [a[0] for a in answers], extensions


def _first_answer(text: str, accepted: Sequence[str]) -> tuple[int, int] | None:
    """Character span of the earliest accepted answer in ``text`` (whole words, any case)."""
    spans = [
        match.span()
        for answer in accepted
        if (match := re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, re.IGNORECASE))
    ]
    return min(spans) if spans else None
