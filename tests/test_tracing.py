"""Causal tracing and cross-model patching on the tiny model: exactness, batching, seeds."""

from __future__ import annotations

import dataclasses
import io
import json
import types
from functools import partial

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from remnant.errors import IncompatibleModelsError, ResultFormatError, SettingsError, TracingError
from remnant.models import load_model
from remnant.models.compat import check_compatible
from remnant.probes.activations import encode_with_subject_spans
from remnant.reports.figures.tracing import diff_curves, trace_average, trace_heatmaps
from remnant.scoring import answer_contexts, encode_answers
from remnant.targets import QAItem, Target
from remnant.tracing import (
    CausalTraceResult,
    DiffSettings,
    ModelDiffResult,
    TraceSettings,
    causal_trace,
    infer_subject,
    model_diff,
    subject_candidates,
    trace_fact,
)
from remnant.tracing.causal_trace import (
    corruption_noise,
    embedding_std,
    storing_band,
    token_classes,
)
from remnant.tracing.model_diff import diff_fact, diff_rows
from remnant.tracing.patching import (
    SITES,
    Corruption,
    PreparedPrompt,
    Rows,
    all_site_hooks,
    patched_probs,
    site_hooks,
)

PERTURBED_LAYER = 1
#: Fraction of the tiny target's forget items whose inferred subject must be the real one.
#: Measured: 1.0 (24 of 24; each question then holds two names, the other a person the
#: model also knows).
MIN_INFERRED_MATCH = 0.75


def unnamed(target: Target, prefix: str = "") -> Target:
    """``target`` with no keywords and no item subjects, each forget question preceded by
    ``prefix`` (formatted with ``other``: a retained person's name, a distracting candidate)."""
    others = [i.subject for i in target.retain]
    forget = tuple(
        item.model_copy(
            update={
                "subject": None,
                "question": prefix.format(other=others[k % len(others)]) + item.question,
            }
        )
        for k, item in enumerate(target.forget)
    )
    return target.model_copy(update={"keywords": (), "forget": forget})


@pytest.fixture(scope="module")
def fact(tiny, tiny_target):
    item = tiny_target.forget[0]
    (prompt,) = encode_with_subject_spans(tiny, [item.question], [item.subject], "plain")
    answer_id = encode_answers(tiny, [item.answer], "plain")[0][0]
    return item, prompt, answer_id


@pytest.fixture(scope="module")
def perturbed():
    """The tiny model with noise added to one MLP's down projection."""
    copy = load_model("tiny-synthetic", name="tiny-perturbed")
    weight = copy.parameters[f"model.layers.{PERTURBED_LAYER}.mlp.down_proj.weight"]
    with torch.no_grad():
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    return copy


@pytest.fixture(scope="module")
def weights_before(tiny):
    return {name: tensor.detach().clone() for name, tensor in tiny.parameters.items()}


@pytest.fixture(scope="module")
def trace(tiny, tiny_target, weights_before) -> CausalTraceResult:
    return causal_trace.run(tiny, tiny_target, TraceSettings(max_facts=3, n_samples=3))


@pytest.fixture(scope="module")
def diff(tiny, perturbed, tiny_target, trace, weights_before) -> ModelDiffResult:
    settings = DiffSettings(max_facts=4, n_bootstrap=200)
    return model_diff.run(tiny, perturbed, tiny_target, settings, storing_layers=[1, 2])


def test_restoring_every_layer_at_every_position_gives_the_clean_probability(tiny, fact):
    item, prompt, answer_id = fact
    start, end = prompt.subject_span
    noise = Corruption(torch.randn(1, end - start, tiny.d_model) * 0.5, start)
    prepared = PreparedPrompt(tiny, prompt.ids, site_hooks(tiny)["resid"], noise)
    clean, corrupted = prepared.probs[:, answer_id].tolist()
    assert corrupted < clean - 0.1  # the noise does corrupt
    n = len(prompt.ids)
    rows = Rows(
        site=torch.tensor([0, 0]),
        layers=torch.ones(2, 4, dtype=torch.bool),
        positions=torch.ones(2, n, dtype=torch.bool),
        sample=torch.tensor([0, -1]),
    )
    out = patched_probs(prepared, rows, prepared.acts, answer_id)
    assert out.tolist() == pytest.approx([clean, clean], abs=1e-6)


def test_zero_noise_gives_zero_indirect_effect(tiny, tiny_target):
    item = tiny_target.forget[1]
    traced = trace_fact(tiny, item, item.subject, 0.0, TraceSettings(n_samples=2))
    assert traced["corrupted_prob"] == pytest.approx(traced["clean_prob"], abs=1e-6)
    for site in SITES:
        np.testing.assert_allclose(traced["scores"][site], traced["clean_prob"], atol=1e-6)


def _one_run_per_cell(tiny, fact, seed):
    """The clean run's activations, and a function giving the mean answer probability over
    2 noise samples (std 0.4, as `trace_fact` draws them) of the fact's prompt under hooks."""
    item, prompt, answer_id = fact
    start, end = prompt.subject_span
    noise = corruption_noise(item.question, 2, end - start, tiny.d_model, 0.4, seed)
    tokens = torch.tensor([prompt.ids])
    with torch.no_grad():
        _, cache = tiny.bridge.run_with_cache(tokens)

    def corrupt(tensor, hook):
        tensor = tensor.clone()
        tensor[:, start:end] += noise
        return tensor

    def run(hooks):
        with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=[("embed.hook_out", corrupt), *hooks]):
            logits = tiny.hf_model(tokens.expand(2, -1)).logits[:, -1].double()
        return float(torch.softmax(logits, -1)[:, answer_id].mean())

    return cache, run


def test_batched_trace_equals_one_forward_per_cell(tiny, fact):
    item, prompt, answer_id = fact
    settings = TraceSettings(n_samples=2, window=2, batch_size=7)
    traced = trace_fact(tiny, item, item.subject, 0.4, settings)
    cache, run = _one_run_per_cell(tiny, fact, settings.seed)
    assert traced["corrupted_prob"] == pytest.approx(run([]), abs=1e-5)
    for site in SITES:
        names = site_hooks(tiny)[site]
        for position in range(len(prompt.ids)):
            for layer in range(tiny.n_layers):
                restored = [layer] if site == "resid" else [layer - 1, layer]

                def restore(tensor, hook, position=position):
                    tensor = tensor.clone()
                    tensor[:, position] = cache[hook.name][0, position]
                    return tensor

                expected = run([(names[j], restore) for j in restored if j >= 0])
                got = traced["scores"][site][position][layer]
                assert got == pytest.approx(expected, abs=1e-5), (site, position, layer)


def test_attribution_trace_is_the_slope_of_a_partial_restoration(tiny, fact):
    item, prompt, answer_id = fact
    settings = TraceSettings(n_samples=2, window=2, method="attribution")
    traced = trace_fact(tiny, item, item.subject, 0.4, settings)
    start, end = prompt.subject_span
    cache, run = _one_run_per_cell(tiny, fact, settings.seed)
    assert traced["corrupted_prob"] == pytest.approx(run([]), abs=1e-5)
    eps, slopes = 1e-3, []
    for site in SITES:
        names = site_hooks(tiny)[site]
        for position in (0, start, end - 1, len(prompt.ids) - 1):
            for layer in (0, 2, 3):
                partly = [layer] if site == "resid" else [layer - 1, layer]

                def restore(tensor, hook, position=position, alpha=0.0):
                    tensor = tensor.clone()
                    clean = cache[hook.name][0, position]
                    tensor[:, position] += alpha * (clean - tensor[:, position])
                    return tensor

                up, down = (
                    run([(names[j], partial(restore, alpha=a)) for j in partly if j >= 0])
                    for a in (eps, -eps)
                )
                slope = (up - down) / (2 * eps)
                estimate = traced["scores"][site][position][layer] - traced["corrupted_prob"]
                assert estimate == pytest.approx(slope, rel=2e-2, abs=2e-4), (site, position, layer)
                slopes.append(abs(slope))
    assert max(slopes) > 0.05  # some restorations matter, so the comparison has teeth


def test_trace_result_is_deterministic_and_round_trips(tiny, tiny_target, trace):
    again = causal_trace.run(tiny, tiny_target, TraceSettings(max_facts=3, n_samples=3))
    assert again.to_dict() == trace.to_dict()
    other = causal_trace.run(tiny, tiny_target, TraceSettings(max_facts=1, n_samples=3, seed=1))
    assert other.facts[0]["corrupted_prob"] != trace.facts[0]["corrupted_prob"]
    assert CausalTraceResult.from_json(trace.to_json()) == trace
    assert len(trace.facts) == 3
    fact = trace.facts[0]
    assert np.asarray(fact["scores"]["mlp"]).shape == (len(fact["tokens"]), tiny.n_layers)
    # the last block output at the last token is the clean state itself
    assert fact["scores"]["resid"][-1][-1] == pytest.approx(fact["clean_prob"], abs=1e-5)
    average = trace.average["mlp"]["last_subject"]
    assert average["n_facts"] == 3 and len(average["mean"]) == len(average["ci"]) == 4
    assert set(trace.summary()["mlp"]) <= set(trace.average["mlp"])
    assert (trace.noise_basis, trace.n_skipped) == ("named", 0)
    assert {(f["subject_source"], f["subject_candidates"]) for f in trace.facts} == {("item", None)}


def test_subject_candidates_are_name_like_spans_and_keywords():
    assert subject_candidates("What is the capital city of New South Wales?") == ["New South Wales"]
    assert subject_candidates("In which city was Ada Lovelace born?") == ["Ada Lovelace"]
    assert subject_candidates("Who wrote Shakespeare's sonnets?") == ["Shakespeare"]
    assert subject_candidates("Where did Ludwig van Beethoven meet Jean-Paul O'Neil?") == [
        "Ludwig van Beethoven",
        "Jean-Paul O'Neil",
    ]
    assert subject_candidates("The Bank of England is in which city? Ask Mary.") == [
        "Bank of England",
        "Mary",
    ]
    assert subject_candidates("Born in Kuwait City, Kuwait, what did I write?") == [
        "Born",
        "Kuwait City",
        "Kuwait",
    ]
    assert subject_candidates("What did the author write?") == []
    assert subject_candidates("what is the mass of the sun?", ["Sun", "Moon"]) == ["sun"]


def test_inferred_subjects_are_the_real_ones(tiny, tiny_target):
    """With a second person named in every question, the span whose corruption lowers the
    answer most is still the person the fact is about."""
    target = unnamed(tiny_target, "{other} asks: ")
    settings = TraceSettings(n_samples=3)
    noise_std = settings.noise_multiplier * embedding_std(tiny, target, "plain")
    contexts = answer_contexts(tiny, target.forget, "plain", from_generation=False)
    matches = []
    for item, real, context in zip(target.forget, tiny_target.forget, contexts):
        candidates = subject_candidates(item.question)
        assert len(candidates) == 2 and real.subject in candidates
        chosen, considered = infer_subject(tiny, item, candidates, context, noise_std, settings)
        drops = [c["drop"] for c in considered]
        assert [c["text"] for c in considered] == candidates
        assert considered[candidates.index(chosen)]["drop"] == max(drops)
        matches.append(chosen == real.subject)
    assert np.mean(matches) >= MIN_INFERRED_MATCH


def test_trace_infers_subjects_the_target_lacks(tiny, tiny_target):
    target = unnamed(tiny_target, "{other} asks: ")
    result = causal_trace.run(tiny, target, TraceSettings(max_facts=2, n_samples=3))
    assert result.noise_basis == "candidates" and result.n_skipped == 0
    real = {i.question: r.subject for i, r in zip(target.forget, tiny_target.forget)}
    for fact in result.facts:
        assert fact["subject_source"] == "inferred"
        assert fact["subject"] == real[fact["question"]]
        (chosen,) = [c for c in fact["subject_candidates"] if c["text"] == fact["subject"]]
        # the candidate was corrupted exactly as the trace corrupts the subject
        assert chosen["subject_span"] == fact["subject_span"]
        assert chosen["corrupted_prob"] == pytest.approx(fact["corrupted_prob"], abs=1e-5)
    assert CausalTraceResult.from_json(result.to_json()) == result


def test_trace_names_infers_or_skips_each_subject(tiny, tiny_target):
    forget = tiny_target.forget
    target = tiny_target.model_copy(update={"keywords": (forget[0].subject,)})
    items = [
        forget[0].model_copy(update={"subject": None}),
        forget[4],
        forget[8].model_copy(update={"subject": None}),
        QAItem(question="where was he born?", answer=forget[0].answer),
    ]
    settings = TraceSettings(n_samples=2, context="prompt")
    result = causal_trace.run(tiny, target, settings, items=items)
    assert result.n_skipped == 1 and result.noise_basis == "named"
    assert [f["subject_source"] for f in result.facts] == ["keyword", "item", "inferred"]
    assert [f["subject"] for f in result.facts] == [i.subject for i in forget[:9:4]]
    assert result.facts[0]["subject_candidates"] is None
    assert [c["text"] for c in result.facts[2]["subject_candidates"]] == [forget[8].subject]
    with pytest.raises(TracingError, match="give the items a 'subject'"):
        causal_trace.run(tiny, unnamed(tiny_target), settings, items=items[3:])


def test_token_classes_and_storing_band():
    classes = token_classes((3, 6), 10)
    assert classes == {
        "first_subject": [3],
        "middle_subject": [4],
        "last_subject": [5],
        "first_subsequent": [6],
        "further": [7, 8],
        "last": [9],
    }
    assert token_classes((3, 4), 5)["first_subsequent"] == []
    assert storing_band([0.0, 0.1, 0.3, 0.5, 0.2, 0.3]) == (3, [2, 3])
    assert storing_band([-0.1, 0.0]) == (None, [])


def test_patching_a_model_into_itself_changes_nothing(tiny, fact):
    _, prompt, answer_id = fact
    result = diff_fact(tiny, tiny, prompt.ids, answer_id)
    assert result["p_original"] == result["p_unlearned"]
    for direction in result["patched"].values():
        for scopes in direction.values():
            for values in scopes.values():
                np.testing.assert_allclose(values, result["p_original"], atol=1e-6)


def test_attribution_patching_is_the_slope_of_a_partial_patch(tiny, perturbed, fact):
    _, prompt, answer_id = fact
    estimated = diff_fact(tiny, perturbed, prompt.ids, answer_id, method="attribution")
    tokens = torch.tensor([prompt.ids])
    with torch.no_grad():
        _, donor = tiny.bridge.run_with_cache(tokens)

    def prob(hooks):
        with torch.no_grad(), perturbed.bridge.hooks(fwd_hooks=hooks):
            logits = perturbed.hf_model(tokens).logits[0, -1].double()
        return float(torch.softmax(logits, -1)[answer_id])

    def toward(tensor, hook, positions, alpha):
        tensor = tensor.clone()
        moved = donor[hook.name][0, positions] - tensor[:, positions]
        tensor[:, positions] += alpha * moved
        return tensor

    eps, slopes = 1e-3, []
    for site in SITES:
        for layer in range(tiny.n_layers):
            name = site_hooks(tiny)[site][layer]
            for scope, positions in (("all", slice(None)), ("last", slice(-1, None))):
                up, down = (
                    prob([(name, partial(toward, positions=positions, alpha=a))])
                    for a in (eps, -eps)
                )
                slope = (up - down) / (2 * eps)
                effect = (
                    estimated["patched"]["restore"][site][scope][layer] - estimated["p_unlearned"]
                )
                assert effect == pytest.approx(slope, rel=2e-2, abs=2e-4), (site, scope, layer)
                slopes.append(abs(slope))
    assert max(slopes) > 0.05  # some patches matter, so the comparison has teeth


def test_cross_model_patching_restores_exactly_where_it_should(tiny, perturbed, fact, diff):
    _, prompt, answer_id = fact
    receiver = PreparedPrompt(perturbed, prompt.ids)
    donor = PreparedPrompt(tiny, prompt.ids, site_hooks(tiny)["resid"])
    n = len(prompt.ids)
    every_layer = Rows(
        site=torch.tensor([0]),
        layers=torch.ones(1, 4, dtype=torch.bool),
        positions=torch.ones(1, n, dtype=torch.bool),
        sample=torch.tensor([-1]),
    )
    patched = patched_probs(receiver, every_layer, donor.acts, answer_id)
    assert float(patched[0]) == pytest.approx(float(donor.probs[0, answer_id]), abs=1e-6)

    p_original = np.array([f["p_original"] for f in diff.facts])
    p_unlearned = np.array([f["p_unlearned"] for f in diff.facts])
    assert np.abs(p_original - p_unlearned).max() > 0.05  # the perturbation matters
    for f in diff.facts:
        restore, destroy = f["patched"]["restore"], f["patched"]["destroy"]
        # block outputs from the perturbed layer on fix everything downstream
        np.testing.assert_allclose(
            restore["resid"]["all"][PERTURBED_LAYER:], f["p_original"], atol=1e-5
        )
        assert restore["resid"]["last"][-1] == pytest.approx(f["p_original"], abs=1e-5)
        # the perturbed MLP's output alone carries the whole difference
        assert restore["mlp"]["all"][PERTURBED_LAYER] == pytest.approx(f["p_original"], abs=1e-5)
        assert destroy["mlp"]["all"][PERTURBED_LAYER] == pytest.approx(f["p_unlearned"], abs=1e-5)
        # layers before the perturbation are identical in both models
        assert restore["mlp"]["all"][0] == pytest.approx(f["p_unlearned"], abs=1e-5)


def test_every_cross_model_patch_equals_one_hooked_forward(tiny, perturbed, fact):
    _, prompt, answer_id = fact
    names = all_site_hooks(tiny)
    receiver = PreparedPrompt(perturbed, prompt.ids)
    donor = PreparedPrompt(tiny, prompt.ids, names)
    rows = diff_rows(len(prompt.ids), tiny.n_layers)
    patched = patched_probs(receiver, rows, donor.acts, answer_id, batch_size=5)
    tokens = torch.tensor([prompt.ids])
    for row in range(len(rows)):
        site = SITES[int(rows.site[row])]
        (layer,) = rows.layers[row].nonzero()[:, 0].tolist()
        name = site_hooks(tiny)[site][layer]
        at = rows.positions[row]

        def write(tensor, hook, at=at, name=name):
            return torch.where(at[None, :, None], donor.acts[name].to(tensor.dtype), tensor)

        with torch.no_grad(), perturbed.bridge.hooks(fwd_hooks=[(name, write)]):
            logits = perturbed.hf_model(tokens).logits[0, -1].float()
        expected = float(torch.softmax(logits, -1)[answer_id])
        assert float(patched[row]) == pytest.approx(expected, abs=1e-5), (site, layer)
    # the patches move the probability by far more than the tolerance
    assert (patched - receiver.probs[0, answer_id]).abs().max() > 1e-3


def test_diff_result_curves_and_round_trip(diff):
    assert ModelDiffResult.from_json(diff.to_json()) == diff
    assert len(diff.curves) == 2 * 3 * 2
    curve = diff.curve("restore", "mlp", "all")
    assert len(curve["patched_mean"]) == len(curve["patched_ci"]) == 4
    if diff.n_affected:
        assert curve["fraction_mean"][PERTURBED_LAYER] == pytest.approx(1.0, abs=1e-4)
        assert curve["peak_layer"] == PERTURBED_LAYER
        assert curve["at_storing_layers"] is not None
    assert diff.storing_layers == [1, 2]
    summary = diff.summary()
    assert summary["original_prob"] == diff.original_prob["mean"]
    assert summary["unlearned_prob"] == diff.unlearned_prob["mean"]
    assert (summary["n_facts"], summary["n_affected"]) == (len(diff.facts), diff.n_affected)
    assert len(summary["curves"]) == len(diff.curves)
    (row,) = [
        r
        for r in summary["curves"]
        if (r["direction"], r["site"], r["scope"]) == ("restore", "mlp", "all")
    ]
    assert (row["peak_layer"], row["at_storing_layers"]) == (
        curve["peak_layer"],
        curve["at_storing_layers"],
    )


def test_screen_runs_the_top_and_sampled_layers_and_estimates_the_rest(
    tiny, perturbed, tiny_target, diff
):
    screen = DiffSettings(max_facts=4, n_bootstrap=200, method="screen")

    def patch(**changes):
        return model_diff.run(tiny, perturbed, tiny_target, dataclasses.replace(screen, **changes),
                              storing_layers=[1, 2])  # fmt: skip

    screened = patch(screen_top=1, screen_sample=1)
    estimated = patch(method="attribution")
    assert len(screened.facts) == len(diff.facts) == 4
    for curve in screened.curves:
        key = (curve["direction"], curve["site"], curve["scope"])
        run, check = curve["layers_run"], curve["screen"]
        if curve["scope"] == "last" or curve["site"] == "resid":  # always run
            assert run == [0, 1, 2, 3] and check is None
        else:
            assert len(run) == 2 and run == sorted(check["top"] + check["sample"])
            measured = np.abs(model_diff.mean_effect(diff.facts, *key))
            floor = measured[check["top"]].min()
            assert check["missed"] == int((measured[check["sample"]] > floor).sum())
        for mine, exact, guess in zip(screened.facts, diff.facts, estimated.facts):
            values = mine["patched"][key[0]][key[1]][key[2]]
            for layer, value in enumerate(values):
                source = exact if layer in run else guess
                want = source["patched"][key[0]][key[1]][key[2]][layer]
                assert value == pytest.approx(want, abs=1e-5), (key, layer)
    # the perturbed MLP's output carries the whole difference: the screen ranks it first
    restored = screened.curve("restore", "mlp", "all")
    assert restored["screen"]["top"] == [PERTURBED_LAYER]
    if screened.n_affected:
        assert restored["peak_layer"] == PERTURBED_LAYER
    assert ModelDiffResult.from_json(screened.to_json()) == screened
    assert diff_curves(screened) is not None
    # a screen that would run every layer runs them all, and estimates nothing
    assert [c["patched_mean"] for c in patch().curves] == [c["patched_mean"] for c in diff.curves]


def test_trace_and_diff_read_the_same_known_facts_at_the_same_tokens(trace, diff):
    """One preamble: both take the known forget facts in order and read each answer in the
    original model's own generation."""
    assert trace.facts and len(diff.facts) == 4
    for traced, patched in zip(trace.facts, diff.facts):
        assert (traced["question"], traced["context"]) == (patched["question"], patched["context"])
        assert traced["clean_prob"] == pytest.approx(patched["p_original"], abs=1e-5)


def test_results_of_another_kind_or_version_are_refused(trace, diff, tmp_path):
    for result, other in ((trace, diff), (diff, trace)):
        cls = type(result)
        data = result.to_dict()
        assert cls.from_dict(data) == result
        with pytest.raises(ResultFormatError, match=f"not a {result.kind!r} result"):
            cls.from_dict(data | {"kind": other.kind})
        with pytest.raises(ResultFormatError, match="schema version"):
            cls.from_json(json.dumps(data | {"schema_version": result.schema_version + 1}))
        saved = other.save(tmp_path / f"{other.kind}.json")
        with pytest.raises(ResultFormatError, match=f"holds a {other.kind!r} result"):
            cls.load(saved)


def test_shared_model_weights_are_unchanged(tiny, weights_before, trace, diff):
    for name, tensor in tiny.parameters.items():
        assert torch.equal(tensor.detach(), weights_before[name]), name


def test_incompatible_models_and_bad_settings_are_refused(tiny):
    other = types.SimpleNamespace(
        name="other",
        hf_model=tiny.hf_model,
        tokenizer=tiny.tokenizer,
        n_layers=tiny.n_layers + 1,
        d_model=tiny.d_model,
        d_mlp=tiny.d_mlp,
    )
    with pytest.raises(IncompatibleModelsError, match="n_layers 4 vs 5"):
        check_compatible(tiny, other, "patch activations")
    with pytest.raises(SettingsError, match=r"TraceSettings\.n_samples"):
        TraceSettings(n_samples=0)
    with pytest.raises(SettingsError, match=r"TraceSettings\.noise_multiplier"):
        TraceSettings(noise_multiplier=-1)
    with pytest.raises(SettingsError, match=r"DiffSettings\.min_drop"):
        DiffSettings(min_drop=0)


def test_figures_draw_from_results(trace, diff):
    figures = [trace_heatmaps(trace, 0), trace_average(trace), diff_curves(diff)]
    figures.append(diff_curves(diff, normalised=False))
    for figure in figures:
        assert isinstance(figure, Figure)
        figure.savefig(io.BytesIO(), format="png", dpi=50)
