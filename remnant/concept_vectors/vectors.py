"""Value vectors and their vocabulary projections.

A *value vector* is what one MLP neuron writes into the residual stream: row ``i`` of
W_out (d_mlp x d_model) in the papers' orientation, column ``i`` of Hugging Face's
``model.layers.{l}.mlp.down_proj.weight`` (d_model x d_mlp). Its *vocabulary projection* is
``W_U (g * v)``: the unembedding applied to the vector, optionally after the final RMSNorm's
elementwise weight ``g`` (the norm's RMS factor is a positive scalar and changes no ranking).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from remnant.errors import (
    ConceptVectorError,
    UnsupportedArchitectureError,
)
from remnant.models.model import Model

#: (layer, neuron index) of one value vector.
VectorRef = tuple[int, int]

FINAL_NORM = "model.norm.weight"


def down_proj_name(layer: int) -> str:
    return f"model.layers.{layer}.mlp.down_proj.weight"


def down_proj(model: Model, layer: int) -> torch.Tensor:
    """The live (d_model, d_mlp) down-projection of ``layer``; column i is value vector i."""
    name = down_proj_name(layer)
    if name not in model.parameters:
        raise UnsupportedArchitectureError(
            f"{model.name} has no {name}: concept vectors need a Llama-style MLP "
            "(model.layers.N.mlp.down_proj), as in Llama, Mistral, Qwen and SmolLM"
        )
    return model.parameters[name]


def value_vectors(model: Model, layer: int) -> torch.Tensor:
    """All value vectors of ``layer`` as a detached float32 (d_mlp, d_model) matrix."""
    return down_proj(model, layer).detach().float().T


def gather_vectors(model: Model, vectors: Sequence[VectorRef]) -> torch.Tensor:
    """The value vectors named by ``vectors``, stacked as float32 (n, d_model)."""
    check_vectors(model, vectors)
    if not vectors:
        return torch.zeros((0, model.d_model))
    return torch.stack([down_proj(model, layer).detach()[:, i].float() for layer, i in vectors])


def readout(model: Model, apply_final_norm: bool = True) -> torch.Tensor:
    """The (d_model, vocab) map from a residual-stream vector to logits: W_Uᵀ, with the final
    norm's elementwise weight folded in when ``apply_final_norm``."""
    unembed = model.hf_model.get_output_embeddings()
    if unembed is None:
        raise UnsupportedArchitectureError(f"{model.name} has no output embedding (lm_head)")
    matrix = unembed.weight.detach().float().T
    if not apply_final_norm:
        return matrix
    if FINAL_NORM not in model.parameters:
        raise UnsupportedArchitectureError(
            f"{model.name} has no {FINAL_NORM}; pass apply_final_norm=False"
        )
    return model.parameters[FINAL_NORM].detach().float()[:, None] * matrix


def top_tokens(
    model: Model, vectors: torch.Tensor, top_k: int, apply_final_norm: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and token ids, each (n, top_k), of the largest entries of each (n, d_model)
    vector's vocabulary projection through ``model``'s own readout, descending. One matmul."""
    matrix = readout(model, apply_final_norm)
    if not 1 <= top_k <= matrix.shape[1]:
        raise ConceptVectorError(
            f"top_k must be between 1 and the vocabulary size {matrix.shape[1]}, not {top_k}"
        )
    with torch.no_grad():
        values, ids = torch.topk(vectors.float() @ matrix, top_k, dim=-1)
    return values, ids


def check_vectors(model: Model, vectors: Sequence[VectorRef]) -> None:
    """Raise unless every (layer, index) names a value vector of ``model``."""
    for layer, index in vectors:
        if not (0 <= layer < model.n_layers and 0 <= index < model.d_mlp):
            raise ConceptVectorError(
                f"no value vector (layer {layer}, index {index}) in {model.name}: layers run "
                f"0..{model.n_layers - 1} and indices 0..{model.d_mlp - 1}"
            )
    if len(set(vectors)) != len(vectors):
        raise ConceptVectorError("a value vector is listed twice; list each (layer, index) once")


def random_vectors(
    layers: Sequence[int],
    d_mlp: int,
    n: int,
    rng,
    exclude: Sequence[VectorRef] = (),
) -> list[VectorRef]:
    """``n`` distinct random value vectors: draw j lies in ``layers[j % len(layers)]`` (so the
    layer mix follows ``layers``), index uniform over the layer's neurons minus ``exclude``."""
    taken = set(exclude)
    out: list[VectorRef] = []
    for j in range(n):
        layer = int(layers[j % len(layers)])
        free = [i for i in range(d_mlp) if (layer, i) not in taken]
        if not free:
            raise ConceptVectorError(f"layer {layer} has no value vector left to draw at random")
        pick = (layer, int(free[int(rng.integers(len(free)))]))
        taken.add(pick)
        out.append(pick)
    return out
