"""Batched activation extraction through the TransformerLens bridge.

The one place in remnant that reads activations: probes, concept vectors and tracing all use it.
Each hook reduces its activation to the chosen position(s) as the batch passes, writing into
preallocated arrays, so memory stays at (prompts x hooks x d_model) however long the prompts are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from remnant.errors import RemnantError
from remnant.models.model import Model
from remnant.scoring.batching import pad
from remnant.scoring.prompts import (
    Style,
    adds_special_tokens,
    encode_prompts,
    format_prompt,
    resolve_style,
)
from remnant.settings import PromptStyle

Position = Literal["last", "subject_last", "subject_mean"]
Site = Literal["resid", "mlp", "attn"]


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
    """Token ids of a formatted prompt and the token span [start, end) naming its subject."""

    ids: tuple[int, ...]
    subject_span: tuple[int, int] | None = None


def hook_names(model: Model, site: Site, layers: Sequence[int] | None = None) -> list[str]:
    """Canonical hook names: ``resid`` = embedding output then every block's output
    (``embed.hook_out``, ``blocks.{i}.hook_out``); ``mlp`` / ``attn`` = each block's sublayer
    output."""
    layers = range(model.n_layers) if layers is None else layers
    if site == "resid":
        return ["embed.hook_out"] + [f"blocks.{i}.hook_out" for i in layers]
    if site in ("mlp", "attn"):
        return [f"blocks.{i}.{site}.hook_out" for i in layers]
    raise RemnantError(f"unknown activation site {site!r}; use resid, mlp or attn")


def encode_with_subject_spans(
    model: Model, texts: Sequence[str], subjects: Sequence[str | None], style: Style = "plain"
) -> list[EncodedPrompt]:
    """Format and encode prompts as scoring does, locating the tokens that overlap each subject
    string (its last occurrence inside the question). In ``completion`` style the prompt is the
    question itself."""
    out = []
    for text, subject in zip(texts, subjects, strict=True):
        prompt = format_prompt(model, text, style)
        ids = encode_prompts(model, [prompt], style)[0]
        span = _token_span(model, prompt, text, subject, style) if subject else None
        out.append(EncodedPrompt(tuple(ids), span))
    return out


def _token_span(model: Model, prompt: str, text: str, name: str, style: Style) -> tuple[int, int]:
    """Token span [start, end) of the last occurrence of ``name`` in ``text``, where ``text``
    is the last occurrence of the question in ``prompt`` (all of it in completion style)."""
    start_text = prompt.rfind(text)
    offset = text.rfind(name)
    if start_text < 0 or offset < 0:
        raise RemnantError(f"subject {name!r} not found in prompt {text!r}")
    char_start = start_text + offset
    char_end = char_start + len(name)
    encoding = model.tokenizer(
        prompt, add_special_tokens=adds_special_tokens(style), return_offsets_mapping=True
    )
    hits = [
        i
        for i, (s, e) in enumerate(encoding["offset_mapping"])
        if e > s and s < char_end and e > char_start
    ]
    if not hits:
        raise RemnantError(f"subject {name!r} covers no token of {text!r}")
    return (hits[0], hits[-1] + 1)


def position_weights(
    prompts: Sequence[EncodedPrompt], position: Position, width: int
) -> torch.Tensor:
    """(n_prompts, width) weights summing to 1 over the positions each prompt is read at."""
    weights = torch.zeros((len(prompts), width))
    for row, prompt in enumerate(prompts):
        if position == "last":
            weights[row, len(prompt.ids) - 1] = 1.0
            continue
        if prompt.subject_span is None:
            raise RemnantError(f"position {position!r} needs a subject span for every prompt")
        start, end = prompt.subject_span
        if position == "subject_last":
            weights[row, end - 1] = 1.0
        else:
            weights[row, start:end] = 1.0 / (end - start)
    return weights


def extract(
    model: Model,
    prompts: Sequence[EncodedPrompt],
    names: Sequence[str],
    *,
    position: Position = "last",
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """Activations at ``names`` read at ``position``: hook name -> float32 (n_prompts, d_model).

    Prompts are right-padded (causal attention keeps padding out of real positions) and the
    forward stops after the deepest requested block.
    """
    if not prompts:
        raise RemnantError("no prompts to extract activations from")
    out = {name: np.empty((len(prompts), model.d_model), dtype=np.float32) for name in names}
    deepest = max((_block_index(n) for n in names), default=0)
    stop = deepest + 1 if deepest + 1 < model.n_layers else None
    pad_id = model.tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        ids, mask = pad([p.ids for p in batch], pad_id, "right")
        weights = position_weights(batch, position, ids.shape[1]).to(model.device)
        rows = slice(start, start + len(batch))

        def reader(tensor: torch.Tensor, hook, rows=rows, weights=weights) -> torch.Tensor:
            reduced = torch.einsum("bs,bsd->bd", weights, tensor.float())
            out[hook.name][rows] = reduced.cpu().numpy()
            return tensor

        hooks = [(name, reader) for name in names]
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
            model.bridge(
                ids.to(model.device), attention_mask=mask.to(model.device), stop_at_layer=stop
            )
    return out


def _block_index(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blocks.") else 0


def extract_questions(
    model: Model,
    questions: Sequence[str],
    subjects: Sequence[str | None],
    site: Site = "resid",
    *,
    position: Position = "last",
    prompt_style: PromptStyle = "auto",
    batch_size: int = 16,
) -> np.ndarray:
    """Stacked activations (n_questions, n_hooks, d_model) of questions prompted as in scoring."""
    style = resolve_style(model, prompt_style)
    prompts = encode_with_subject_spans(model, questions, subjects, style)
    names = hook_names(model, site)
    acts = extract(model, prompts, names, position=position, batch_size=batch_size)
    return np.stack([acts[n] for n in names], axis=1)
