"""Gradients of a scalar with respect to activations (not parameters): the backward half of
attribution patching, where one forward and one backward pass estimate the effect of changing
any activation (activation difference x gradient)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch

from remnant.models.model import Model
from remnant.probes.activations import hook_names

Hook = tuple[str, Callable]


def activation_gradients(
    model: Model,
    names: Sequence[str],
    objective: Callable[[], torch.Tensor],
    hooks: Sequence[Hook] = (),
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per hook name in ``names``: the activation there and the gradient of ``objective()`` (a
    scalar from forwards of ``model`` it runs, under ``hooks`` too) with respect to it, both
    detached. Parameters get no gradient; the input embeddings are made to require one so
    that the activations have a graph."""
    kept: dict[str, torch.Tensor] = {}

    def track(tensor: torch.Tensor, hook) -> torch.Tensor:
        return tensor.requires_grad_(True)

    def keep(tensor: torch.Tensor, hook, name: str) -> torch.Tensor:
        tensor.retain_grad()
        kept[name] = tensor
        return tensor

    attached = [(hook_names(model, "resid")[0], track), *hooks]
    attached += [(name, partial(keep, name=name)) for name in names]
    parameters = [p for p in model.hf_model.parameters() if p.requires_grad]
    for p in parameters:
        p.requires_grad_(False)
    try:
        with torch.enable_grad(), model.bridge.hooks(fwd_hooks=attached):
            objective().backward()
    finally:
        for p in parameters:
            p.requires_grad_(True)
    return {name: (kept[name].detach(), kept[name].grad.detach()) for name in names}
