"""The quantities the methods optimise, as functions of a `Batch` (natural-log units)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from remnant.models.model import Model
from remnant.unlearning.data import Batch


def token_logprobs(model: Model, batch: Batch) -> torch.Tensor:
    """log p(token t | tokens < t) for t = 1..T-1, shape (B, T-1); 0 where not scored."""
    logits = model.hf_model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False).logits
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, batch.ids[:, 1:, None])[..., 0]
    return picked * batch.scored[:, 1:]


def nll(token_lp: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Negative log-likelihood per scored token, averaged within each example, then over the
    batch (a long passage weighs as much as a short answer)."""
    return (-token_lp.sum(-1) / batch.scored[:, 1:].sum(-1)).mean()


def npo_loss(logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−β·logratio), logratio = log π_θ(y|x) − log π_ref(y|x) per sequence."""
    return -(2.0 / beta) * F.logsigmoid(-beta * logratio).mean()


def residual(model: Model, batch: Batch, layer: int) -> torch.Tensor:
    """Residual stream after decoder layer ``layer`` (``blocks.{layer}.hook_out``), (B, T, d).

    The forward stops there (TransformerLens ``stop_at_layer``), so later layers cost nothing.
    """
    return model.bridge(
        batch.ids, attention_mask=batch.mask, stop_at_layer=layer + 1, use_cache=False
    )


def masked_mse(values: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared difference averaged over model dimensions and the non-padding tokens of each
    example, then over examples (RMU's per-sequence token average)."""
    per_token = (values - reference).pow(2).mean(-1) * mask
    return (per_token.sum(-1) / mask.sum(-1)).mean()


def random_unit_vector(d_model: int, generator: torch.Generator) -> torch.Tensor:
    """RMU's fixed direction: entries uniform in [0, 1), scaled to unit length."""
    u = torch.rand(d_model, generator=generator)
    return u / u.norm()
