"""Interventions on value vectors, as forward hooks (the model's weights untouched) or as weight
edits (for a checkpoint of one's own); both give the same forward pass.

* ``zero``: the neuron's activation is set to 0 (hook on ``blocks.{l}.mlp.hook_post``), i.e. the
  down_proj column is zeroed.
* ``noise``: N(0, sigma^2) noise is added to the value vector: the hook adds activation_i x noise
  to the MLP output (``blocks.{l}.mlp.hook_out``); the edit adds the noise to the down_proj
  column. The noise of vector (l, i) is a function of (seed, l, i) alone.
* ``project``: the directions of the chosen vectors of a layer (an orthonormal basis Q of their
  span) are removed from that layer's MLP output: out <- out - Q Q^T out, i.e.
  down_proj <- (I - Q Q^T) down_proj; for one vector u = v/|v|, (I - u u^T) W_out.

`grouped_hooks` runs several interventions in one batch: the batch's rows fall into equal
consecutive slices, one per intervention, and each slice gets its own intervention's hooks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from remnant.concept_vectors.vectors import VectorRef, check_vectors, down_proj
from remnant.errors import ConceptVectorError
from remnant.models.model import Model
from remnant.settings import Constraint, Interval, OneOf, require

Mode = Literal["zero", "noise", "project"]
MODES: tuple[str, ...] = ("zero", "noise", "project")
Hook = tuple[str, Callable]

#: Constraints of the intervention settings shared by `ValidateSettings` and `AblateSettings`.
INTERVENTION_CONSTRAINTS: dict[str, Constraint] = {
    "mode": OneOf(MODES),
    "sigma": Interval(float),
}


def require_noise_sigma(mode: str, sigma: float) -> None:
    """The settings' cross-field rule: noise needs a positive sigma (else `SettingsError`)."""
    require(mode != "noise" or sigma > 0, f"noise needs a positive sigma, not {sigma}")


def check_mode(mode: str, sigma: float) -> None:
    """Refuse an unknown mode, or noise without a positive sigma (`ConceptVectorError`)."""
    if mode not in MODES:
        raise ConceptVectorError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "noise" and not sigma > 0:
        raise ConceptVectorError(f"noise needs a positive sigma, not {sigma}")


def by_layer(vectors: Sequence[VectorRef]) -> dict[int, list[int]]:
    """Neuron indices grouped by layer, in the order given."""
    grouped: dict[int, list[int]] = defaultdict(list)
    for layer, index in vectors:
        grouped[layer].append(index)
    return dict(grouped)


def gaussian_noise(layer: int, indices: Sequence[int], d_model: int, sigma: float, seed: int):
    """(len(indices), d_model) float32 N(0, sigma^2) noise, row i a function of (seed, layer, i)."""
    rows = [
        np.random.default_rng([seed, layer, index]).normal(0.0, sigma, d_model) for index in indices
    ]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def direction_basis(model: Model, layer: int, indices: Sequence[int]) -> torch.Tensor:
    """Orthonormal basis (d_model, m) of the span of the chosen value vectors of ``layer``."""
    vectors = down_proj(model, layer).detach()[:, list(indices)].double()
    if bool((vectors.norm(dim=0) < 1e-12).any()):
        raise ConceptVectorError(
            f"a chosen value vector of layer {layer} is zero, so it has no direction to project out"
        )
    basis, r = torch.linalg.qr(vectors)
    if bool((r.diagonal().abs() < 1e-9 * vectors.norm(dim=0).max()).any()):
        raise ConceptVectorError(
            f"the chosen value vectors of layer {layer} are linearly dependent"
        )
    return basis


def intervention_hooks(
    model: Model,
    vectors: Sequence[VectorRef],
    mode: Mode = "zero",
    *,
    sigma: float = 0.1,
    seed: int = 0,
) -> list[Hook]:
    """Forward hooks applying ``mode`` to ``vectors``; use with ``model.bridge.hooks(...)``."""
    check_mode(mode, sigma)
    check_vectors(model, vectors)
    hooks: list[Hook] = []
    for layer, indices in by_layer(vectors).items():
        post, out = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.mlp.hook_out"
        if mode == "zero":
            hooks.append((post, _zero_hook(indices)))
        elif mode == "noise":
            noise = gaussian_noise(layer, indices, model.d_model, sigma, seed)
            hooks += _noise_hooks(post, out, indices, noise.to(model.device))
        else:
            basis = direction_basis(model, layer, indices).to(model.device)
            hooks.append((out, _project_hook(basis)))
    return hooks


def grouped_hooks(groups: Sequence[Sequence[Hook]]) -> list[Hook]:
    """Forward hooks for a batch whose rows split into ``len(groups)`` equal consecutive
    slices: slice g gets the hooks ``groups[g]`` (from `intervention_hooks`; none: unchanged),
    so each row computes exactly what it would under its own intervention alone."""
    names = dict.fromkeys(name for hooks in groups for name, _ in hooks)
    return [
        (name, _sliced([[fn for at, fn in hooks if at == name] for hooks in groups]))
        for name in names
    ]


def _sliced(per_group: list[list[Callable]]) -> Callable:
    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        size, rest = divmod(act.shape[0], len(per_group))
        if rest:
            raise ValueError(f"{act.shape[0]} rows do not split into {len(per_group)} groups")
        parts = []
        for g, fns in enumerate(per_group):
            part = act[g * size : (g + 1) * size]
            for fn in fns:
                part = fn(part, hook)
            parts.append(part)
        return torch.cat(parts)

    return hook


def _zero_hook(indices: list[int]) -> Callable:
    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        act = act.clone()
        act[..., indices] = 0
        return act

    return hook


def _noise_hooks(post: str, out: str, indices: list[int], noise: torch.Tensor) -> list[Hook]:
    seen: dict[str, torch.Tensor] = {}

    def read(act: torch.Tensor, hook=None) -> torch.Tensor:
        seen["act"] = act[..., indices]
        return act

    def add(mlp_out: torch.Tensor, hook=None) -> torch.Tensor:
        return mlp_out + (seen.pop("act") @ noise.to(mlp_out.dtype))

    return [(post, read), (out, add)]


def _project_hook(basis: torch.Tensor) -> Callable:
    def hook(mlp_out: torch.Tensor, hook=None) -> torch.Tensor:
        q = basis.to(mlp_out.dtype)
        return mlp_out - (mlp_out @ q) @ q.T

    return hook


def edit_weights(
    model: Model,
    vectors: Sequence[VectorRef],
    mode: Mode = "zero",
    *,
    sigma: float = 0.1,
    seed: int = 0,
) -> None:
    """Apply ``mode`` to ``vectors`` in ``model``'s own weights, in place (only for a copy you
    own: `ablate.run` makes one). The model's cached content hash is dropped."""
    check_mode(mode, sigma)
    check_vectors(model, vectors)
    with torch.no_grad():
        for layer, indices in by_layer(vectors).items():
            weight = down_proj(model, layer)
            if mode == "zero":
                weight[:, indices] = 0
            elif mode == "noise":
                noise = gaussian_noise(layer, indices, model.d_model, sigma, seed)
                weight[:, indices] += noise.T.to(weight.dtype).to(weight.device)
            else:
                basis = direction_basis(model, layer, indices)
                edited = weight.double() - basis @ (basis.T @ weight.double())
                weight.copy_(edited.to(weight.dtype))
