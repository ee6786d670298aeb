"""A plain Hugging Face twin of a bridged model, for greedy decoding where no hook can act.

TransformerLens' attention bridge recomputes attention itself so that its hooks see every step,
and expands grouped-query keys and values to every query head: a copy of the whole KV cache per
layer at every decoded token. The twin is built from the same config with PyTorch's fused
attention (SDPA: a single query token attends to the key/value heads unexpanded) around the
*same* weight tensors (nothing copied: training and in-place edits show in both), so decoding
costs what the model needs (`bench/decoding.py` measures both side by side). The toolchain
self-check compares the twin's cached decoding with the plain model's full forward, as it does
the bridge's; `Model.plain_decoder` hands it out only while nothing but those weights acts.
"""

from __future__ import annotations

import copy
import itertools

import torch
from transformers import PreTrainedModel

from remnant.models.accounting import count_tokens

#: The attention implementation of the twin.
ATTENTION = "sdpa"


def plain_twin(
    hf_model: PreTrainedModel, parameters: dict[str, torch.Tensor]
) -> PreTrainedModel | None:
    """A model of ``hf_model``'s class and config, with SDPA attention, holding the tensors of
    ``parameters`` (Hugging Face names) as its weights; None when that cannot be built (an
    architecture without SDPA, weights on several devices, a weight the names do not cover)."""
    from accelerate import init_empty_weights

    devices = {tensor.device for tensor in parameters.values()}
    if len(devices) != 1:
        return None
    try:
        with init_empty_weights(include_buffers=False):
            twin = type(hf_model)._from_config(
                copy.deepcopy(hf_model.config), attn_implementation=ATTENTION
            )
    except (ValueError, ImportError):
        return None
    for name, tensor in parameters.items():
        module_name, _, attr = name.rpartition(".")
        try:
            module = twin.get_submodule(module_name)
        except AttributeError:
            return None
        slots = module._parameters if attr in module._parameters else module._buffers
        slots[attr] = tensor
    twin.tie_weights()
    held = itertools.chain(twin.named_parameters(remove_duplicate=False), twin.named_buffers())
    if any(tensor.is_meta for _, tensor in held):
        return None
    (device,) = devices
    for module in twin.modules():
        for key, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[key] = buffer.to(device)
    twin.eval()
    twin.generation_config = hf_model.generation_config
    count_tokens(twin)
    return twin
