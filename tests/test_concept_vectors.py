"""Concept vectors on the tiny model: locate's vectorised scores, hooks equal weight edits,
batched interventions equal one at a time, validation is seeded and leaves the model alone,
compare and ablate checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from remnant.concept_vectors import (
    REPORT_FILE,
    AblateResult,
    AblateSettings,
    CompareResult,
    CompareSettings,
    LocateResult,
    LocateSettings,
    ValidateResult,
    ValidateSettings,
    ablate,
    compare,
    edit_weights,
    intervention_hooks,
    locate,
    token_sets,
    validate,
)
from remnant.concept_vectors.locate import TokenLookup, layer_scores
from remnant.concept_vectors.validate import InterventionScorer
from remnant.concept_vectors.vectors import down_proj_name
from remnant.errors import (
    ConceptVectorError,
    IncompatibleModelsError,
    OutputExistsError,
    SettingsError,
)
from remnant.models import load_model
from remnant.models.checkpoint import save_checkpoint
from remnant.reports.figures.concept_vectors import comparison, located_by_layer, validation_drops
from remnant.scoring import sequence_logprobs

FAST = {"batch_size": 64, "max_new_tokens": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def target(tiny_target):
    """A smaller target (8 forget, 8 retain items) keeps validation quick."""
    return tiny_target.model_copy(
        update={"forget": tiny_target.forget[:8], "retain": tiny_target.retain[:8]}
    )


@pytest.fixture(scope="module")
def located(tiny, target) -> LocateResult:
    return locate.run(tiny, target, LocateSettings(n_candidates=5))


@pytest.fixture(scope="module")
def validation_settings() -> ValidateSettings:
    """The default reference (100 random vectors, batched) for two candidates and one set."""
    return ValidateSettings(n_candidates=2, n_random_sets=1, **FAST)


def _reference_score(model, sets, layer, index, top_k, min_words):
    """Per-neuron concept score with plain loops: the definition, written out once more."""
    v = model.parameters[down_proj_name(layer)].detach()[:, index].float()
    g = model.parameters["model.norm.weight"].detach().float()
    logits = model.parameters["lm_head.weight"].detach().float() @ (g * v)
    ratio = len(sets.concept) / len(sets.background)
    options = []
    for sign in (1, -1):
        top = torch.topk(sign * logits, top_k)
        p = torch.softmax(top.values, -1)
        ids = top.indices.tolist()
        f_c = sum(float(p[k]) for k, i in enumerate(ids) if i in sets.concept)
        f_b = sum(float(p[k]) for k, i in enumerate(ids) if i in sets.background)
        words = {sets.word_of[i] for i in ids if i in sets.concept}
        options.append((len(words) >= min_words, f_c - ratio * f_b, sign))
    ranked_pos, score_pos, _ = options[0]
    ranked_neg, score_neg, _ = options[1]
    flip = (ranked_neg and not ranked_pos) or (ranked_neg == ranked_pos and score_neg > score_pos)
    return options[1] if flip else options[0]


def test_vectorised_scores_equal_per_neuron_computation(tiny, target, located):
    settings = LocateSettings(top_k=50)
    sets = token_sets(tiny.tokenizer, target)
    lookup = TokenLookup(sets, tiny.hf_model.get_output_embeddings().weight.shape[0])
    with torch.no_grad():
        scores = layer_scores(tiny, 2, lookup, settings)
    for index in (0, 7, 123, 511):
        ranked, score, sign = _reference_score(tiny, sets, 2, index, 50, settings.min_words)
        assert float(scores["score"][index]) == pytest.approx(score, abs=1e-5)
        assert int(scores["sign"][index]) == sign
        assert bool(scores["n_words"][index] >= settings.min_words) == ranked
    best = located.candidates[0]
    ranked, score, sign = _reference_score(
        tiny, sets, best["layer"], best["index"], 200, located.settings["min_words"]
    )
    assert ranked and best["score"] == pytest.approx(score, abs=1e-5) and best["sign"] == sign
    assert [c["score"] for c in located.candidates] == sorted(
        (c["score"] for c in located.candidates), reverse=True
    )
    assert LocateResult.from_json(located.to_json()) == located
    assert located.summary(2) == [
        {k: c[k] for k in ("layer", "index", "sign", "score")} for c in located.candidates[:2]
    ]


@pytest.mark.parametrize("mode", ["zero", "noise", "project"])
def test_hooks_equal_weight_edits_and_leave_weights_alone(tiny, mode):
    vectors = [(1, 5), (1, 40), (3, 7)]
    ids = torch.tensor(
        [tiny.tokenizer("Question: Where was Guthis Gesein born?\nAnswer:").input_ids]
    )
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=intervention_hooks(tiny, vectors, mode)):
        hooked = tiny.hf_model(ids).logits
    copy = load_model("tiny-synthetic")
    edit_weights(copy, vectors, mode)
    with torch.no_grad():
        edited, plain = copy.hf_model(ids).logits, tiny.hf_model(ids).logits
    torch.testing.assert_close(hooked, edited, atol=1e-4, rtol=0)
    assert (hooked - plain).abs().max() > 1e-3  # the intervention did something
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def test_project_mode_removes_the_direction():
    model = load_model("tiny-synthetic")
    weight = model.parameters[down_proj_name(2)]  # (d_model, d_mlp): column i = value vector i
    original = weight.detach().clone()
    u = original[:, 11] / original[:, 11].norm()
    edit_weights(model, [(2, 11)], "project")
    assert (u @ weight.detach()).abs().max() < 1e-5  # no column keeps a component along u
    expected = original - torch.outer(u, u @ original)
    torch.testing.assert_close(weight.detach(), expected, atol=1e-6, rtol=0)
    assert (weight.detach()[:, 11]).norm() < 1e-5


#: Interventions of different layers and sizes (and none), each measured in a batch; large ones,
#: because the tiny model barely notices a single vector, so that every two differ.
INTERVENTIONS = (
    [(1, i) for i in range(0, 512, 2)],
    [],
    [(0, i) for i in range(512)],
    [(2, i) for i in range(1, 512, 2)],
    [(3, i) for i in range(400)],
)


def _alone(model, scorer, vectors, mode, sigma):
    """Mean answer log-probs under one intervention, the way validation measured them before
    batching: one pass over the items with only its hooks attached (right padding, every
    position's logits)."""
    hooks = intervention_hooks(model, vectors, mode, sigma=sigma, seed=scorer.settings.seed)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        logprobs = sequence_logprobs(model, scorer.prompts, scorer.answers, batch_size=64)
    sums = np.array([lp.sum() for lp in logprobs])
    return sums[: scorer.n_forget].mean(), sums[scorer.n_forget :].mean()


@pytest.mark.parametrize("mode", ["zero", "noise", "project"])
def test_batched_interventions_equal_each_alone(tiny, target, mode):
    settings = ValidateSettings(mode=mode, sigma=0.5, batch_size=12)
    alone = None
    # 3 interventions per pass (the last pass holds 2) of 4 items each, so several passes per
    # group; one intervention per pass; all 5 in each pass (64 asked, at most batch_size)
    for per_pass in (3, 1, 64):
        scorer = InterventionScorer(
            tiny, target, dataclasses.replace(settings, interventions_per_batch=per_pass)
        )
        alone = alone or [_alone(tiny, scorer, vectors, mode, 0.5) for vectors in INTERVENTIONS]
        measured = scorer.measure_many(INTERVENTIONS, greedy=False)
        for row, (forget, retain) in zip(measured, alone, strict=True):
            assert row["forget_logprob"] == pytest.approx(forget, abs=1e-5)
            assert row["retain_logprob"] == pytest.approx(retain, abs=1e-5)
            assert row["forget_accuracy"] is None and row["retain_accuracy"] is None
    forget = [f for f, _ in alone]
    # every two interventions differ by far more than the tolerance, so any mix-up would show
    assert min(abs(a - b) for a, b in itertools.combinations(forget, 2)) > 1e-4


def test_validation_is_seeded_and_never_edits_the_model(tiny, target, located, validation_settings):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    first = validate.run(tiny, target, validation_settings, located=located)
    second = validate.run(tiny, target, validation_settings, located=located)
    assert first == second
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    assert len(first.random) == ValidateSettings().n_random == 100
    assert first.n_forget == 8 and first.n_retain == 8 and first.n_interventions == 1 + 2 + 100 + 2
    assert {(r["layer"], r["index"]) for r in first.random}.isdisjoint(located.vectors())
    # greedy accuracy where it is read: baseline, candidates, set ablation; not random vectors
    assert first.baseline["forget_accuracy"] is not None
    for row in first.random:
        assert row["forget_logprob_drop"] is not None and row["retain_logprob_drop"] is not None
        assert row["forget_accuracy"] is None and row["retain_accuracy_drop"] is None
    for row in first.candidates:
        assert row["forget_accuracy_drop"] is not None and row["retain_accuracy"] is not None
        assert row["validated"] == (
            row["forget_logprob_drop"] > first.thresholds["forget_drop"]
            and row["retain_logprob_drop"] <= first.thresholds["retain_drop_max"]
        )
    chosen = first.set_ablation["chosen"]
    assert chosen["forget_accuracy"] is not None and len(first.set_ablation["random"]) == 1
    assert ValidateResult.from_json(first.to_json()) == first
    assert (
        first.settings["prompt_style"] in ("chat", "plain") and first.settings["batch_size"] == 64
    )
    summary = first.summary()
    assert summary["n_validated"] == first.n_validated and summary["n_candidates"] == 2
    assert (
        summary["set_ablation"]["chosen"]["forget_accuracy_drop"]
        == (chosen["forget_accuracy_drop"])
    )
    reseeded = validate.run(
        tiny, target, dataclasses.replace(validation_settings, seed=1), located=located
    )
    assert reseeded.random != first.random
    for figure in (located_by_layer(located), validation_drops(first)):
        assert figure.axes


@pytest.mark.parametrize("change", [{"criterion": "accuracy"}, {"random_accuracy": True}])
def test_random_vectors_get_greedy_accuracy_when_asked_or_judged_by_it(
    tiny, target, located, change
):
    settings = ValidateSettings(n_candidates=2, n_random=20, n_random_sets=1, **FAST, **change)
    result = validate.run(tiny, target, settings, located=located)
    assert len(result.random) == 20
    for row in result.random:
        assert row["forget_accuracy_drop"] is not None and row["retain_accuracy_drop"] is not None
    measure = settings.criterion
    assert result.thresholds["measure"] == measure
    drops = [row[f"forget_{measure}_drop"] for row in result.random]
    assert result.thresholds["forget_drop"] == pytest.approx(np.percentile(drops, 95), abs=1e-6)
    for row in result.candidates:
        assert row["validated"] == (
            row[f"forget_{measure}_drop"] > result.thresholds["forget_drop"]
            and row[f"retain_{measure}_drop"] <= result.thresholds["retain_drop_max"]
        )
    assert validation_drops(result).axes


def test_validation_refuses_vectors_located_on_another_model(tiny_gold, target, located):
    with pytest.raises(ConceptVectorError, match="locate them on the model you validate"):
        validate.run(tiny_gold, target, ValidateSettings(**FAST), located=located)
    with pytest.raises(SettingsError, match="n_random must be an integer >= 20"):
        ValidateSettings(n_random=5)
    with pytest.raises(SettingsError, match="interventions_per_batch must be an integer >= 1"):
        ValidateSettings(interventions_per_batch=0)


def test_identical_models_compare_at_cosine_and_jaccard_one(tiny, target, located):
    result = compare.run(tiny, tiny, target, vectors=located.vectors(3), signs=located.signs(3))
    for row in result.vectors + result.random:
        assert row["cosine"] == pytest.approx(1.0, abs=1e-6) and row["angle_degrees"] == 0.0
        assert row["jaccard"] == 1.0 and row["l2"] == 0.0
        assert row["concept_overlap_original"] == row["concept_overlap_unlearned"]
    assert len(result.random) == 100
    assert CompareResult.from_json(result.to_json()) == result
    assert comparison(result).axes


def test_gold_model_vectors_differ(tiny, tiny_gold, target, located):
    result = compare.run(
        tiny, tiny_gold, target, CompareSettings(n_random=20), vectors=located.vectors(2)
    )
    assert result.statistics["random"]["cosine"]["max"] < 0.99  # trained apart from the same seed
    summary = result.summary()
    assert summary["random"]["min"] == result.statistics["random"]["cosine"]["min"]
    assert summary["vectors"]["mean"] == result.statistics["vectors"]["cosine"]["mean"]


def test_compare_refuses_a_different_architecture(tiny, target, tmp_path):
    config = LlamaConfig(
        vocab_size=tiny.hf_model.config.vocab_size,
        hidden_size=tiny.d_model,
        intermediate_size=256,
        num_hidden_layers=tiny.n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    other = LlamaForCausalLM(config)
    save_checkpoint(other.state_dict(), config, tiny.tokenizer, tmp_path / "other")
    with pytest.raises(IncompatibleModelsError, match="d_mlp 512 vs 256"):
        compare.run(tiny, load_model(str(tmp_path / "other")), target, vectors=[(0, 1)])


VECTORS = ((1, 5), (2, 7), (2, 300))


@pytest.fixture(scope="module")
def ablated(target, tmp_path_factory) -> AblateResult:
    """Three vectors zeroed in a checkpoint loaded from its spec."""
    out = tmp_path_factory.mktemp("ablate") / "ablated"
    return ablate.run("tiny-synthetic", target, AblateSettings(vectors=VECTORS, **FAST), out=out)


def test_ablated_checkpoint_reloads_and_differs_only_in_ablated_columns(tiny, target, ablated):
    out = Path(ablated.output)
    reloaded = load_model(str(out))
    assert reloaded.content_hash == ablated.output_content_hash != ablated.source["content_hash"]
    assert load_model("tiny-synthetic").content_hash == ablated.source["content_hash"]
    original, edited = tiny.state_dict(), reloaded.state_dict()
    assert original.keys() == edited.keys()
    for name, tensor in original.items():
        changed = [i for layer, i in VECTORS if name == down_proj_name(layer)]
        if not changed:
            assert torch.equal(tensor, edited[name]), name
            continue
        mask = torch.zeros(tensor.shape[1], dtype=torch.bool)
        mask[changed] = True
        assert torch.equal(tensor[:, ~mask], edited[name][:, ~mask])
        assert (edited[name][:, mask] == 0).all()
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["kind"] == "ablate" and AblateResult.load(out / REPORT_FILE) == ablated
    assert [(v["layer"], v["index"]) for v in report["vectors"]] == list(VECTORS)
    assert report["mode"] == "zero" and set(report["before"]) == {"forget", "retain", "seconds"}
    assert report["after"]["forget"]["n"] == 8
    assert ablated.summary() == {
        split: {
            "before": ablated.before[split]["accuracy"],
            "after": ablated.after[split]["accuracy"],
        }
        for split in ("forget", "retain")
    }
    with pytest.raises(OutputExistsError):
        ablate.run("tiny-synthetic", target, AblateSettings(vectors=VECTORS), out=out)


def test_ablating_a_model_leaves_it_unchanged_and_measures_the_same(
    tiny, target, ablated, tmp_path
):
    source_hash, weights = tiny.content_hash, {k: v.clone() for k, v in tiny.state_dict().items()}
    settings = AblateSettings(vectors=VECTORS, **FAST)
    result = ablate.run(tiny, target, settings, out=tmp_path / "ablated")
    tiny.weights_changed()  # recompute, do not trust the cache
    assert tiny.content_hash == source_hash == result.source["content_hash"]
    assert all(torch.equal(weights[k], v) for k, v in tiny.state_dict().items())
    # a Model and its spec give the same checkpoint and the same scores
    assert result.output_content_hash == ablated.output_content_hash
    for scores, expected in ((result.before, ablated.before), (result.after, ablated.after)):
        assert {k: v for k, v in scores.items() if k != "seconds"} == {
            k: v for k, v in expected.items() if k != "seconds"
        }


def test_an_existing_output_is_refused_before_any_work(tiny, target, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("loaded or copied a model before checking the output")

    monkeypatch.setattr(ablate, "load_model", no_work)
    monkeypatch.setattr(ablate, "load_copy", no_work)
    settings = AblateSettings(vectors=VECTORS)
    for model in ("tiny-synthetic", tiny):
        with pytest.raises(OutputExistsError, match="--overwrite"):
            ablate.run(model, target, settings, out=tmp_path)


def test_ablate_top_located_vectors_with_noise(target, tmp_path):
    settings = AblateSettings(n_vectors=2, mode="noise", sigma=0.5, **FAST)
    result = ablate.run("tiny-synthetic", target, settings, out=tmp_path / "noisy")
    assert result.selection.startswith("top 2 located") and result.sigma == 0.5
    assert [v["rank"] for v in result.vectors] == [0, 1]
    with pytest.raises(SettingsError, match="not both and not neither"):
        AblateSettings(vectors=[(0, 1)], n_vectors=1)
    with pytest.raises(SettingsError, match="not both and not neither"):
        AblateSettings()
    with pytest.raises(SettingsError, match="mode must be one of"):
        AblateSettings(vectors=[(0, 1)], mode="erase")
    with pytest.raises(SettingsError, match="noise needs a positive sigma"):
        AblateSettings(vectors=[(0, 1)], mode="noise", sigma=0.0)
    with pytest.raises(ConceptVectorError, match="no value vector"):
        ablate.run("tiny-synthetic", target, AblateSettings(vectors=[(9, 1)]), out=tmp_path / "x")


def test_attribution_is_the_first_order_effect_of_zeroing_a_neuron(tiny, target):
    from remnant.concept_vectors.attribution import estimated_drops
    from remnant.scoring import encode_answers, encode_prompts, format_prompt, resolve_style

    items = target.forget[:5]
    drops, _ = estimated_drops(tiny, items, "auto", batch_size=2)  # three passes
    style = resolve_style(tiny, "auto")
    prompts = encode_prompts(tiny, [format_prompt(tiny, i.question, style) for i in items], style)
    answers = encode_answers(tiny, [i.answer for i in items], style)

    def mean_logprob(layer: int, index: int, scale: float) -> float:
        def hook(act, hook):
            act = act.clone()
            act[..., index] *= scale
            return act

        with (
            torch.no_grad(),
            tiny.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", hook)]),
        ):
            return float(np.mean([lp.sum() for lp in sequence_logprobs(tiny, prompts, answers)]))

    # d log p / d scale at scale 1 (central difference) is activation x gradient summed
    eps = 1e-2
    for flat in drops.abs().flatten().topk(3).indices.tolist():
        layer, index = divmod(flat, tiny.d_mlp)
        slope = (mean_logprob(layer, index, 1 + eps) - mean_logprob(layer, index, 1 - eps)) / (
            2 * eps
        )
        assert float(drops[layer, index]) == pytest.approx(slope, rel=2e-2, abs=1e-5)
    assert float(drops.abs().max()) > 1e-3  # the estimates are not all zero


def test_attribution_located_vectors_are_validated_on_items_the_ranking_did_not_read(tiny, target):
    from remnant.concept_vectors.attribution import attribution_scores
    from remnant.concept_vectors.locate import fit_half

    settings = ValidateSettings(
        n_candidates=2,
        n_random=20,
        n_random_sets=1,
        locate=LocateSettings(method="attribution", n_candidates=5),
        **FAST,
    )
    located = locate.run(tiny, target, settings.locate)
    forget, retain = fit_half(target, 0)
    assert located.fitted_on == [i.question for i in (*forget, *retain)]
    assert 0 < len(forget) < len(target.forget) and len(retain) == len(target.retain) // 2
    scores, signs = attribution_scores(tiny, forget, retain)
    best = scores.flatten().topk(5).indices.tolist()
    assert located.vectors() == [divmod(f, tiny.d_mlp) for f in best]
    for c in located.candidates:
        assert c["score"] == pytest.approx(float(scores[c["layer"], c["index"]]), abs=1e-6)
        assert c["sign"] == int(signs[c["layer"], c["index"]])
    checked = validate.run(tiny, target, settings, located=located)
    assert checked.n_forget == len(target.forget) - len(forget)
    assert checked.n_retain == len(target.retain) - len(retain)
    assert LocateResult.from_json(located.to_json()) == located
