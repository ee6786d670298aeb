"""Logit lens: read every layer's residual stream through the model's own final norm and
unembedding, at the token just before each forget answer.

For each forget item and residual layer (embedding output, then every block output) it records
the rank (1 = the top token) and probability of the answer's first token, for the original and
the unlearned model, read at the same token ids. An answer that ranks high at middle layers and
low at the output was suppressed near the output rather than removed (nostalgebraist, 2020;
Patil et al., 2023). Applied to the last block's output, the readout equals the model's real
next-token logits.

Where to read: with ``context="generation"`` at the position where the original model states
the answer in its own greedy output (`remnant.scoring.answer_contexts`); with
``context="prompt"`` right after the prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from remnant.errors import RemnantError, TargetError
from remnant.models.compat import check_compatible
from remnant.models.model import Model
from remnant.probes.activations import EncodedPrompt, extract, hook_names
from remnant.results import Result
from remnant.scoring import PromptStyle, answer_contexts, resolve_style
from remnant.targets.model import Target


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

    kind = "lens"

    original: dict[str, Any]
    unlearned: dict[str, Any]
    target: str
    settings: dict[str, Any]
    layers: list[str]
    items: list[dict[str, Any]]
    summary: dict[str, dict[str, list[float]]]


def lens_logits(model: Model, resid: torch.Tensor) -> torch.Tensor:
    """Logits (float32, ``(..., vocab)``) of residual-stream vectors ``(..., d_model)`` through the
    model's final norm and unembedding."""
    bridge = model.bridge
    with torch.no_grad():
        return bridge.unembed(bridge.ln_final(resid.to(model.device))).float().cpu()


def answer_ranks(
    model: Model, resid: np.ndarray, token_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rank (1 = top) and probability of ``token_ids[i]`` read from ``resid[i, layer]``.

    ``resid`` is (n_items, n_layers, d_model); both outputs are (n_items, n_layers).
    """
    targets = torch.tensor(list(token_ids))[:, None]
    ranks, probs = [], []
    for layer in range(resid.shape[1]):
        logits = lens_logits(model, torch.from_numpy(resid[:, layer]))
        chosen = logits.gather(-1, targets)
        ranks.append((logits > chosen).sum(-1) + 1)
        probs.append(torch.softmax(logits, dim=-1).gather(-1, targets)[:, 0])
    return torch.stack(ranks, 1).numpy(), torch.stack(probs, 1).double().numpy()


def analyze(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: LensSettings = LensSettings(),
) -> LensResult:
    """Logit-lens rank and probability of every forget answer at every layer of both models."""
    if not target.forget:
        raise TargetError(
            f"the logit lens reads forget QA items and target {target.name!r} has none; "
            "add `forget:` items with answers"
        )
    check_compatible(original, unlearned, "read the logit lens at the same tokens")
    style = resolve_style(original, settings.prompt_style)
    contexts = answer_contexts(
        original,
        target.forget,
        style,
        from_generation=settings.context == "generation",
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
    )
    prompts = [EncodedPrompt(c.ids) for c in contexts]
    answer_ids = [c.answer_id for c in contexts]
    names = hook_names(original, "resid")
    readouts = {}
    for key, model in (("original", original), ("unlearned", unlearned)):
        acts = extract(model, prompts, names, batch_size=settings.batch_size)
        resid = np.stack([acts[n] for n in names], axis=1)
        readouts[key] = answer_ranks(model, resid, answer_ids)
    items = []
    for k, item in enumerate(target.forget):
        row: dict[str, Any] = {
            "question": item.question,
            "answer": item.answer,
            "context": contexts[k].extension,
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
