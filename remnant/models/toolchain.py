"""The toolchain under every number: installed versions, one adapter for a known upstream
break, and a self-check that every loaded model must pass before it is used.

The self-check runs two fixed prompts (left-padded into one batch, as generation pads them) and
compares, position by position on real tokens:

* the TransformerBridge's logits with the plain Hugging Face model's, computed before the bridge
  was booted around it (the bridge must not change what the model computes);
* cached incremental decoding (prefill, then one token at a time with ``past_key_values``, as
  ``generate`` does) with a full forward (the cache must not change what the model computes),
  through the bridge and through the plain decoding twin (`remnant.models.decoder`).

Either differing by more than float tolerance raises `ToolchainError`, so no analysis prints a
number from a model whose generations or activations are wrong.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from typing import Any

import torch

from remnant.errors import ToolchainError

#: The versions `requirements.lock` installs (a test keeps the two in step).
TESTED_VERSIONS = {"torch": "2.13.0", "transformers": "5.24.0", "transformer-lens": "4.3.0"}

CHECK_PROMPTS = ("The capital of France is Paris, and the capital of Italy is", "Water boils at")
CHECK_STEPS = 3  # tokens decoded one at a time after the cached prefix


def installed_versions(packages: tuple[str, ...] = tuple(TESTED_VERSIONS)) -> dict[str, str]:
    """Installed version of each distribution (local build tags such as ``+cpu`` dropped)."""
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def install_adapters() -> None:
    """Patch TransformerLens so its attention bridge sees the KV cache under transformers 5.24.

    transformers 5.24 renamed the keyword Llama's decoder layer passes to its attention from
    ``past_key_values`` to ``cache``; TransformerLens 4.3's ``AttentionBridge._update_kv_cache``
    reads only ``past_key_values`` or ``layer_past``, so it skipped the cache update and every
    decode step attended to itself alone. The adapter hands a `Cache` given as ``cache`` on as
    ``past_key_values``; it changes nothing when no such keyword arrives. Idempotent. A
    TransformerLens without this method is left alone (the self-check judges it).
    """
    # 5.24 also warns on every call that passes `past_key_values` (TransformerLens and
    # transformers' own generate do); nothing a user can act on, and older releases need the name.
    warnings.filterwarnings(
        "ignore", message="`past_key_values` is deprecated", category=FutureWarning
    )
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:
        return
    current = getattr(AttentionBridge, "_update_kv_cache", None)
    if current is not None and not getattr(current, "remnant_adapter", False):
        AttentionBridge._update_kv_cache = _cache_keyword_adapter(current)


def _cache_keyword_adapter(update_kv_cache: Any) -> Any:
    from transformers.cache_utils import Cache

    @functools.wraps(update_kv_cache)
    def adapted(self: Any, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is None and isinstance(kwargs.get("cache"), Cache):
            kwargs["past_key_values"] = kwargs.pop("cache")
        return update_kv_cache(self, k, v, **kwargs)

    adapted.remnant_adapter = True  # type: ignore[attr-defined]
    return adapted


def check_batch(tokenizer: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """The self-check prompts, left-padded into one batch."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(list(CHECK_PROMPTS), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    return {
        "input_ids": batch.input_ids.to(device),
        "attention_mask": batch.attention_mask.to(device),
    }


def reference_logits(hf_model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A full forward of the plain Hugging Face model (call before booting the bridge)."""
    with torch.no_grad():
        return hf_model(**batch, use_cache=False).logits.float()


def self_check(
    name: str,
    bridge: Any,
    batch: dict[str, torch.Tensor],
    reference: torch.Tensor,
    decoder: Any = None,
) -> dict[str, Any]:
    """Compare the bridge, and cached decoding through it and through ``decoder`` (if any),
    with ``reference``; raise `ToolchainError` when any differs beyond tolerance. Returns the
    largest differences (logits) and the tolerance."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = mask.bool()
    dtype = next(bridge.original_model.parameters()).dtype
    tolerance = _tolerance(dtype) * max(1.0, reference[real].abs().max().item())
    with torch.no_grad():
        through_bridge = bridge(ids, attention_mask=mask).float()
        bridge_diff = (through_bridge - reference)[real].abs().max().item()
        cache_diff = _incremental_decoding_diff(bridge.original_model, ids, mask, reference)
        decoder_diff = (
            None if decoder is None else _incremental_decoding_diff(decoder, ids, mask, reference)
        )
    report = {
        "bridge_max_abs_diff": bridge_diff,
        "cache_max_abs_diff": cache_diff,
        "decoder_cache_max_abs_diff": decoder_diff,
        "tolerance": tolerance,
        "versions": installed_versions(),
    }
    failures = []
    if not bridge_diff <= tolerance:
        failures.append(
            f"the TransformerBridge's logits differ from the plain model's by {bridge_diff:.3g}"
        )
    if not cache_diff <= tolerance:
        failures.append(
            f"cached incremental decoding differs from a full forward by {cache_diff:.3g}"
        )
    if decoder_diff is not None and not decoder_diff <= tolerance:
        failures.append(
            f"cached decoding through the plain twin differs from a full forward by "
            f"{decoder_diff:.3g}"
        )
    if failures:
        raise ToolchainError(_failure_message(name, failures, tolerance))
    return report


def _incremental_decoding_diff(
    hf_model: Any, ids: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor
) -> float:
    """Max |Δlogit| between one-token-at-a-time decoding after a cached prefix and ``reference``."""
    split = ids.shape[1] - CHECK_STEPS
    out = hf_model(input_ids=ids[:, :split], attention_mask=mask[:, :split], use_cache=True)
    worst = (out.logits.float() - reference[:, :split])[mask[:, :split].bool()].abs().max().item()
    for t in range(split, ids.shape[1]):
        out = hf_model(
            input_ids=ids[:, t : t + 1],
            attention_mask=mask[:, : t + 1],
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        step = (out.logits[:, -1].float() - reference[:, t])[mask[:, t].bool()]
        worst = max(worst, step.abs().max().item())
    return worst


def _tolerance(dtype: torch.dtype) -> float:
    """Allowed |Δlogit| per unit of the largest |logit|: float rounding, nothing more."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


def _failure_message(name: str, failures: list[str], tolerance: float) -> str:
    installed = ", ".join(f"{k} {v}" for k, v in installed_versions().items())
    tested = ", ".join(f"{k} {v}" for k, v in TESTED_VERSIONS.items())
    return (
        f"toolchain self-check failed on {name}: {'; '.join(failures)} "
        f"(tolerance {tolerance:.3g}). "
        f"Generations and activations from this model would be wrong, so remnant stops here. "
        f"Installed: {installed}. Tested: {tested}. Install the tested versions from remnant's "
        f"lock file: `pip install -r requirements.lock` in a clone of remnant (or `make setup`)."
    )
