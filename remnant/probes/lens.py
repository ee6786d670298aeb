"""Logit lens: read every layer's residual stream through the model's own final norm and
unembedding, at the token just before each forget answer.

For each forget item and residual layer (embedding output, then every block output) it records
the rank (1 = the top token) and probability of the answer's first token, for the original and
the unlearned model, read at the same token ids. An answer that ranks high at middle layers and
low at the output was suppressed near the output rather than removed (nostalgebraist, 2020;
Patil et al., 2023). Applied to the last block's output, the readout equals the model's real
next-token logits.

Control: the same readout of the answers of the *other* forget items of the item's ``group``
(all other forget items when it has none), in the item's own residual stream. An answer that
ranks no better than other answers of its kind is read as the kind of answer the question asks
for, not as the fact: a model that never saw the facts ranks them alike.

Where to read: with ``context="generation"`` at the position where the original model states
the answer in its own greedy output (`remnant.scoring.answer_contexts`); with
``context="prompt"`` right after the prompt.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from remnant.errors import TargetError
from remnant.models.compat import check_compatible
from remnant.models.model import Model
from remnant.probes.activations import EncodedPrompt, extract, hook_names
from remnant.results import Result
from remnant.scoring import answer_contexts, resolve_style
from remnant.scoring.statistics import rounded
from remnant.settings import ContextSettings
from remnant.targets.model import Target


@dataclasses.dataclass(frozen=True, kw_only=True)
class LensSettings(ContextSettings):
    """Where the lens reads (see the module docstring), prompting and batching; recorded in
    every result. ``max_new_tokens`` bounds the original model's greedy answers that
    ``context="generation"`` reads in."""


@dataclasses.dataclass(frozen=True)
class LensResult(Result):
    """Logit lens: rank (1 = top token) and probability of each forget answer's first token at
    every residual layer of the original and the unlearned model."""

    kind = "lens"
    schema_version = 2

    original: dict[str, Any]
    """Identity of the original model (name, source, content hash)."""
    unlearned: dict[str, Any]
    """Identity of the unlearned model."""
    target: str
    """Name of the target whose forget items were read."""
    settings: dict[str, Any]
    """`LensSettings` used, with the prompt style ``auto`` resolved."""
    layers: list[str]
    """``layers[i]`` names the hook of layer index ``i`` (0 = embedding output, then every
    block output)."""
    items: list[dict[str, Any]]
    """Per forget item: ``question``, ``answer``, ``context`` (the generated text the prompt
    was extended by; empty when read at the end of the prompt), ``answer_token`` (the token
    read), ``control_tokens`` (the other answers of its group, each by its first token, this
    answer's excluded) and, per model, the per-layer ``{model}_rank`` (1 = top), ``{model}_prob``
    (in [0, 1]) and ``{model}_control_rank`` (the median rank of the control tokens; None
    without any)."""
    by_layer: dict[str, dict[str, list[float]]]
    """``by_layer[model]``: per-layer ``median_rank`` over the items, ``median_control_rank``
    (the median over items with a control of their ``{model}_control_rank``), ``mean_prob`` and
    ``top1`` (fraction of items whose answer token ranks first)."""

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per model: the best layer (lowest median rank; the earliest on ties), its median
        rank, and the median rank at the output (last layer)."""
        out = {}
        for model, curves in self.by_layer.items():
            ranks = curves["median_rank"]
            best = min(range(len(ranks)), key=ranks.__getitem__)
            out[model] = {
                "best_layer": best,
                "best_median_rank": ranks[best],
                "output_median_rank": ranks[-1],
            }
        return out


def best_inner_layer(median_ranks: Sequence[float]) -> int | None:
    """The layer before the output where the answer's median rank is best (None: no such
    layer)."""
    inner = range(len(median_ranks) - 1)
    return min(inner, key=median_ranks.__getitem__) if inner else None


def lens_logits(model: Model, resid: torch.Tensor) -> torch.Tensor:
    """Logits (float32, ``(..., vocab)``) of residual-stream vectors ``(..., d_model)`` through the
    model's final norm and unembedding."""
    bridge = model.bridge
    with torch.no_grad():
        return bridge.unembed(bridge.ln_final(resid.to(model.device))).float().cpu()


def answer_ranks(
    model: Model, resid: np.ndarray, token_ids: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Rank (1 = top) and probability of each of ``token_ids[i]`` read from ``resid[i, layer]``.

    ``resid`` is (n_items, n_layers, d_model); both outputs are (n_items, n_layers, n_tokens),
    NaN past the end of an item's shorter token list.
    """
    width = max(len(ids) for ids in token_ids)
    targets = torch.tensor([list(ids) + [0] * (width - len(ids)) for ids in token_ids])
    ranks, probs = [], []
    for layer in range(resid.shape[1]):
        logits = lens_logits(model, torch.from_numpy(resid[:, layer]))
        chosen = logits.gather(-1, targets)
        ascending = logits.sort(-1).values
        above = logits.shape[-1] - torch.searchsorted(ascending, chosen, right=True)
        ranks.append(above + 1)
        probs.append(torch.softmax(logits, dim=-1).gather(-1, targets))
    lengths = torch.tensor([len(ids) for ids in token_ids])
    padding = (torch.arange(width)[None, :] >= lengths[:, None])[:, None]  # (n_items, 1, width)
    rank_array = torch.stack(ranks, 1).double().masked_fill(padding, math.nan).numpy()
    prob_array = torch.stack(probs, 1).double().masked_fill(padding, math.nan).numpy()
    return rank_array, prob_array


def specificity(item: dict[str, Any], layer: int, model: str = "unlearned") -> float | None:
    """The answer's log2 rank at ``layer`` minus its control answers' (median rank), in
    ``model``'s readout of a `LensResult` item (None: the item has no control)."""
    control = item[f"{model}_control_rank"][layer]
    return None if control is None else math.log2(item[f"{model}_rank"][layer]) - math.log2(control)


def _median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None (None: there are none)."""
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def control_tokens(answer_ids: Sequence[int], groups: Sequence[str | None]) -> list[list[int]]:
    """Per item, the distinct first tokens of the other items' answers in its group (all items
    share one group when none is set), its own answer's token excluded."""
    return [
        sorted({t for t, g in zip(answer_ids, groups) if g == group and t != own})
        for own, group in zip(answer_ids, groups)
    ]


def run(
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
        batch_size=settings.generation_batch_size,
    )
    prompts = [EncodedPrompt(c.ids) for c in contexts]
    answer_ids = [c.answer_id for c in contexts]
    controls = control_tokens(answer_ids, [item.group for item in target.forget])
    names = hook_names(original, "resid")
    readouts = {}
    for key, model in (("original", original), ("unlearned", unlearned)):
        acts = extract(model, prompts, names, batch_size=settings.batch_size)
        resid = np.stack([acts[n] for n in names], axis=1)
        all_ranks, all_probs = answer_ranks(
            model, resid, [[own, *other] for own, other in zip(answer_ids, controls)]
        )
        readouts[key] = (all_ranks[..., 0].astype(int), all_probs[..., 0], all_ranks[..., 1:])
    items = []
    for k, item in enumerate(target.forget):
        row: dict[str, Any] = {
            "question": item.question,
            "answer": item.answer,
            "context": contexts[k].extension,
            "answer_token": original.tokenizer.decode([answer_ids[k]]),
            "control_tokens": [original.tokenizer.decode([t]) for t in controls[k]],
        }
        for key, (ranks, probs, control) in readouts.items():
            row[f"{key}_rank"] = [int(r) for r in ranks[k]]
            row[f"{key}_prob"] = [rounded(p) for p in probs[k]]
            row[f"{key}_control_rank"] = [
                _median([float(r) for r in layer[: len(controls[k])]]) for layer in control[k]
            ]
        items.append(row)
    by_layer = {
        key: {
            "median_rank": [float(np.median(col)) for col in ranks.T],
            "median_control_rank": [
                _median([row[f"{key}_control_rank"][layer] for row in items])
                for layer in range(len(names))
            ],
            "mean_prob": [rounded(col.mean()) for col in probs.T],
            "top1": [rounded((col == 1).mean()) for col in ranks.T],
        }
        for key, (ranks, probs, _) in readouts.items()
    }
    return LensResult(
        original=original.identity(),
        unlearned=unlearned.identity(),
        target=target.name,
        settings=settings.record(prompt_style=style),
        layers=names,
        items=items,
        by_layer=by_layer,
    )
