"""Embedding-space attacks on the tiny model: generation from edited embeddings is exact when
nothing is edited, noise hits only the question and grows with its scale, the soft prompt is
optimised on the fit split only and has a permuted-answer control."""

from __future__ import annotations

import pytest

from remnant.attacks import embedding
from remnant.errors import SettingsError
from remnant.scoring import encode_prompts, format_prompt, generate, resolve_style

SETTINGS = embedding.EmbeddingSettings(
    noise_scales=(0.5, 4.0), n_samples=2, soft_iterations=30, n_bootstrap=200, max_new_tokens=8
)


def test_generating_from_unedited_embeddings_equals_generating_from_tokens(tiny, tiny_target):
    style = resolve_style(tiny, "auto")
    questions = [item.question for item in tiny_target.forget[:10]]
    ids = encode_prompts(tiny, [format_prompt(tiny, q, style) for q in questions], style)
    plain = generate(tiny, ids, max_new_tokens=8, batch_size=4)
    edited = generate(tiny, ids, max_new_tokens=8, batch_size=4, edit=lambda b, e, m: e)
    assert plain == edited
    assert sum(bool(text) for text in plain) >= 8


def test_question_span_is_the_question(tiny, tiny_target):
    style = resolve_style(tiny, "auto")
    for item in tiny_target.forget[:5]:
        ids, start, end = embedding.question_positions(tiny, item, style)
        assert tiny.tokenizer.decode(ids[start:end]).strip() == item.question


def test_settings_are_checked():
    with pytest.raises(SettingsError, match="noise_scales"):
        embedding.EmbeddingSettings(noise_scales=(0.0,))
    with pytest.raises(SettingsError, match="no attack"):
        embedding.EmbeddingSettings(noise_scales=(), soft_tokens=0)


@pytest.fixture(scope="module")
def attacked(tiny, tiny_ga, tiny_gold, tiny_target):
    hashes = (tiny.content_hash, tiny_ga.content_hash)
    return embedding.run(tiny, tiny_ga, tiny_target, SETTINGS, gold=tiny_gold), hashes


def test_noise_grows_with_its_scale_and_zero_is_the_plain_model(attacked, tiny, tiny_ga):
    result, hashes = attacked
    scales = result.noise["scales"]
    assert [s["scale"] for s in scales] == [0.0, 0.5, 4.0]
    original = [s["roles"]["original"]["mean"]["accuracy"] for s in scales]
    assert original[0] >= 0.9 and original[2] <= original[0] - 0.3, original
    for s in scales:
        for scores in s["roles"].values():
            assert scores["best_of_n"]["accuracy"] >= scores["mean"]["accuracy"]
    for model, before in zip((tiny, tiny_ga), hashes):
        model.weights_changed()
        assert model.content_hash == before


def test_soft_prompt_is_fitted_on_fit_items_beside_a_permuted_control(attacked, tiny_target):
    result, _ = attacked
    soft = result.soft_prompt
    held = set(result.split["held_out"])
    permutation = soft["permutation"]
    assert {p["question"] for p in permutation} == set(result.split["fit"])
    assert all(p["question"] != p["answer_of"] for p in permutation)
    for role, scores in soft["roles"].items():
        assert {row["question"] for row in scores["attack"]["items"]} == held
        assert scores["loss"][-1] < scores["loss"][0], role
        assert scores["control_loss"][-1] < scores["control_loss"][0], role
    original = soft["roles"]["original"]
    assert original["attack"]["accuracy"] >= original["plain"]["accuracy"] - 0.15
