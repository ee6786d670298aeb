"""Quantization: round-to-nearest is exact where it must be, bounded where it rounds, works on
a copy, and 8 bits leave the tiny model's answers alone."""

from __future__ import annotations

import pytest
import torch

from remnant.attacks import quantize
from remnant.attacks.protocol import MODEL_WORK
from remnant.errors import SettingsError
from remnant.scoring import resolve_style


@pytest.mark.parametrize("scheme", quantize.SCHEMES)
@pytest.mark.parametrize("bits", [8, 4])
def test_rounding_error_is_at_most_half_a_step_per_group(scheme, bits):
    weight = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    weight[0, :4] *= 50  # one large group must not coarsen the others
    rounded = quantize.quantize_weight(weight, bits, scheme, group_size=4)
    assert rounded.shape == weight.shape and rounded.dtype == weight.dtype
    for start in range(0, 10, 4):  # groups of 4, 4 and 2 (the last one shorter)
        group, error = weight[:, start : start + 4], (rounded - weight)[:, start : start + 4]
        if scheme == "symmetric":
            step = group.abs().amax(-1) / (2 ** (bits - 1) - 1)
        else:
            step = (group.amax(-1).clamp(min=0) - group.amin(-1).clamp(max=0)) / (2**bits - 1)
        assert torch.all(error.abs().amax(-1) <= step / 2 + 1e-6)
        levels = {round(v, 4) for v in (rounded[1, start : start + 4] / step[1]).tolist()}
        assert len(levels) <= 2**bits


def test_fewer_bits_round_more_and_constant_groups_are_kept():
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    errors = [
        (quantize.quantize_weight(weight, b, "asymmetric", 32) - weight).abs().mean().item()
        for b in (8, 4, 2)
    ]
    assert errors[0] < errors[1] < errors[2]
    constant = torch.full((2, 8), 0.3)
    assert torch.equal(quantize.quantize_weight(constant, 4, "asymmetric", 4), constant)
    zeros = torch.zeros(2, 8)
    assert torch.equal(quantize.quantize_weight(zeros, 4, "symmetric", 4), zeros)


def test_settings_are_checked():
    with pytest.raises(SettingsError, match="bits"):
        quantize.QuantizeSettings(bits=(1,))
    with pytest.raises(SettingsError, match="schemes"):
        quantize.QuantizeSettings(schemes=("nf4",))


SETTINGS = quantize.QuantizeSettings(n_bootstrap=300, max_new_tokens=8, group_size=32)


@pytest.fixture(scope="module")
def quantized(tiny, tiny_ga, tiny_target):
    hashes = (tiny.content_hash, tiny_ga.content_hash)
    MODEL_WORK.clear()  # computed here, not kept from another module's run
    result = quantize.run(tiny, tiny_ga, tiny_target, SETTINGS)
    return result, hashes


def test_the_models_quantized_are_copies(quantized, tiny, tiny_ga):
    result, (original_hash, unlearned_hash) = quantized
    for model in (tiny, tiny_ga):
        model.weights_changed()  # recompute, do not trust the cached hash
    assert tiny.content_hash == original_hash == result.models["original"]["content_hash"]
    assert tiny_ga.content_hash == unlearned_hash == result.models["unlearned"]["content_hash"]
    names = [c["name"] for c in result.conditions]
    assert names == [quantize.FULL, "int8 symmetric", "int8 asymmetric",
                     "int4 symmetric", "int4 asymmetric"]  # fmt: skip
    assert result.conditions[0]["n_weights"] == 0
    assert all(c["n_weights"] == 7 * tiny.n_layers for c in result.conditions[1:])


def test_eight_bits_keep_the_original_accuracy(quantized):
    result, _ = quantized
    full = result.conditions[0]["scores"]["original"]
    for condition in result.conditions[1:3]:
        scores = condition["scores"]["original"]
        for split in ("forget", "retain"):
            assert abs(scores[split]["accuracy"] - full[split]["accuracy"]) <= 0.05, split
        assert (
            condition["retain_change"]["original"]["ci"][0]
            <= 0
            <= condition["retain_change"]["original"]["ci"][1]
        )


def test_a_second_audited_model_reuses_the_originals_scores(quantized, tiny, tiny_target):
    result, _ = quantized
    # the original audited against itself: its scores come from the first run, kept in memory
    again = quantize.run(tiny, tiny, tiny_target, SETTINGS)
    assert again.seconds["original"] < result.seconds["original"] / 10
    assert again.seconds["unlearned"] < result.seconds["unlearned"] / 10
    for kept, first in zip(again.conditions, result.conditions):
        assert kept["scores"]["original"] == kept["scores"]["unlearned"]
        assert kept["scores"]["original"] == first["scores"]["original"]
    # what was kept is what scoring the model afresh gives (full precision and 4-bit)
    style = resolve_style(tiny, SETTINGS.prompt_style)
    grid = [(None, None), (4, "symmetric")]
    fresh = quantize._model_scores(tiny, tiny_target, grid, style, SETTINGS)
    kept = {c["name"]: c for c in again.conditions}
    for (n_weights, scores), name in zip(fresh, (quantize.FULL, "int4 symmetric")):
        assert kept[name]["n_weights"] == n_weights and kept[name]["scores"]["original"] == scores
