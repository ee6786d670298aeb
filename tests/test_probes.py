"""Linear probes and logit lens on the tiny synthetic model.

The unlearned model is NPO restricted to the last block (hyperparameters pinned here): its
greedy forget answers are gone and most retain answers kept, while the lower blocks, where the
tiny model already holds part of each fact, are untouched; the probes must find it there. The
gold model never saw the forget people: no probe may report knowledge of them. (The tiny model
has no linear "truth direction" even for facts it knows, so ``truth`` is only checked on gold.)
"""

from __future__ import annotations

from unittest import mock

import joblib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from remnant.errors import SettingsError, TargetError
from remnant.models import load_model
from remnant.probes import lens, linear
from remnant.probes.activations import extract_questions
from remnant.reports.figures.probes import lens_ranks, probe_accuracy
from remnant.scoring import encode_prompts, format_prompt, next_token_logits
from remnant.unlearning import UnlearningSettings, unlearn

FAST = dict(folds=4, inner_folds=2, Cs=(0.01, 0.1, 1.0), n_bootstrap=500)


@pytest.fixture(scope="module")
def npo_last_block(tiny, tiny_target, tmp_path_factory):
    """NPO on the last block only; its greedy forget answers are gone (4 new tokens)."""
    out = tmp_path_factory.mktemp("unlearned") / "npo-last-block"
    settings = UnlearningSettings(
        method="npo",
        max_new_tokens=4,
        stop_rule=False,
        overrides=dict(
            lr=3e-3,
            steps=32,
            batch_size=8,
            layers=(3,),
            modules=(),
            passages=False,
            beta=0.1,
            retain_weight=1.0,
            seed=0,
        ),
    )
    result = unlearn.run(tiny, tiny_target, settings, out=out)
    assert result.after["forget"]["accuracy"] <= 0.05
    assert result.after["retain"]["accuracy"] >= 0.5
    return load_model(str(out))


@pytest.fixture(scope="module")
def gold_probes(tiny, tiny_gold, tiny_target):
    settings = linear.ProbeSettings(tasks=("truth", "recall"), **FAST)
    return linear.run(tiny, tiny_gold, tiny_target, settings)


def _ci_low(curve):
    return np.array([low for low, _ in curve["ci"]])


def test_recall_probe_reads_knowledge_npo_left_below_the_last_block(
    tiny, npo_last_block, tiny_target
):
    settings = linear.ProbeSettings(tasks=("recall",), **FAST)
    result = linear.run(tiny, npo_last_block, tiny_target, settings)
    recall = result.tasks["recall"]
    assert recall["n_items"] == len(tiny_target.forget)
    assert _ci_low(recall["unlearned"]).max() > recall["chance"]  # still readable somewhere
    assert _ci_low(recall["original"])[-1] > recall["chance"]
    # the top of the model was changed: what the output layer held is gone there
    assert recall["unlearned"]["accuracy"][-1] < recall["original"]["accuracy"][-1]
    assert result.layers[0] == "embed.hook_out" and len(result.layers) == tiny.n_layers + 1
    (row,) = result.summary()
    assert row["unlearned"]["layer"] < tiny.n_layers and row["original"]["layer"] == tiny.n_layers
    assert result.settings["tasks"] == ["recall"] and result.settings["Cs"] == [0.01, 0.1, 1.0]


def test_gold_model_shows_no_forget_knowledge(gold_probes):
    for task in ("truth", "recall"):
        scores = gold_probes.tasks[task]
        assert (_ci_low(scores["unlearned"]) <= scores["chance"]).all(), task
        assert (_ci_low(scores["transfer"]) <= scores["chance"]).all(), task
    truth = gold_probes.tasks["truth"]
    assert truth["chance"] == 0.5
    assert all(low <= 0.5 <= high for low, high in truth["unlearned"]["ci"])
    recall = gold_probes.tasks["recall"]
    assert _ci_low(recall["original"]).max() > recall["chance"]  # the probe works when it can


def test_truth_statements_and_folds_keep_items_apart(tiny_target):
    examples = linear._truth_examples(tiny_target, seed=0)
    assert examples.scored.sum() == 2 * len(tiny_target.forget)
    by_question = {i.question: i for i in (*tiny_target.forget, *tiny_target.retain)}
    for start in range(0, len(examples.texts), 2):
        item = by_question[examples.texts[start]]
        true, false = examples.continuations[start : start + 2]
        assert (true, list(examples.labels[start : start + 2])) == (item.answer, [1, 0])
        assert false != item.answer
        split = tiny_target.forget if examples.scored[start] else tiny_target.retain
        assert any(i.answer == false and i.group == item.group for i in split)
    splits = linear._outer_splits(examples, linear.ProbeSettings())
    held = np.concatenate([test for _, test in splits])
    assert sorted(held) == list(np.flatnonzero(examples.scored))  # each forget item once
    for fit, test in splits:
        assert not set(examples.groups[fit]) & set(examples.groups[test])
        assert examples.scored[test].all() and (~examples.scored).sum() <= len(fit)


@pytest.mark.parametrize("shortcut", ["answer", "question"])
def test_truth_probe_scores_chance_from_the_answer_or_the_question_alone(tiny_target, shortcut):
    examples = linear._truth_examples(tiny_target, seed=0)
    words = examples.continuations if shortcut == "answer" else examples.texts
    vocabulary = sorted(set(words))
    onehot = np.eye(len(vocabulary))[[vocabulary.index(w) for w in words]][:, None, :]
    settings = linear.ProbeSettings(**FAST)
    original = linear._fit_all(examples, onehot, settings)
    scores = linear._cross_validate(examples, original, onehot, settings)
    assert scores["original"]["accuracy"] == [0.5]


def test_same_seed_same_numbers(tiny, tiny_gold, tiny_target):
    settings = linear.ProbeSettings(tasks=("concept",), folds=3, inner_folds=2, Cs=(0.1,))
    first = linear.run(tiny, tiny_gold, tiny_target, settings)
    kept = linear.run(tiny, tiny_gold, tiny_target, settings)  # the original's probes kept
    linear.ORIGINAL_FITS.clear()
    again = linear.run(tiny, tiny_gold, tiny_target, settings)
    assert first.to_dict() == again.to_dict() == kept.to_dict()
    assert linear.ProbeResult.from_json(first.to_json()) == first
    concept = first.tasks["concept"]
    assert concept["counts_as_knowledge"] is False and concept["chance"] == 0.5
    figure = probe_accuracy(first)
    assert isinstance(figure, Figure) and len(figure.axes) == 1


def test_errors_say_what_to_fix(tiny, tiny_target):
    no_mcq = tiny_target.model_copy(update={"mcq": ()})
    with pytest.raises(TargetError, match="multiple-choice"):
        linear.run(tiny, tiny, no_mcq, linear.ProbeSettings(tasks=("mcq",)))
    no_passages = tiny_target.model_copy(update={"forget_passages": ()})
    with pytest.raises(TargetError, match="passages"):
        linear.run(tiny, tiny, no_passages, linear.ProbeSettings(tasks=("concept",)))
    with pytest.raises(SettingsError, match=r"ProbeSettings\.tasks must be .*'truth'"):
        linear.ProbeSettings(tasks=("vibes",))
    with pytest.raises(SettingsError, match=r"ProbeSettings\.folds must be an integer >= 2"):
        linear.ProbeSettings(folds=1)
    with pytest.raises(SettingsError, match=r"ProbeSettings\.Cs must be"):
        linear.ProbeSettings(Cs=[0.1, 0.0])
    # lists are accepted and kept as tuples
    as_lists = linear.ProbeSettings(tasks=["truth"], Cs=[0.1, 1.0])
    assert as_lists == linear.ProbeSettings(tasks=("truth",), Cs=(0.1, 1.0))
    assert as_lists.tasks == ("truth",) and as_lists.Cs == (0.1, 1.0)
    with pytest.raises(TargetError, match="forget"):
        lens.run(tiny, tiny, tiny_target.model_copy(update={"forget": ()}))


def test_lens_on_the_last_block_reproduces_the_real_logits(tiny, tiny_target):
    questions = [i.question for i in tiny_target.forget[:6]]
    resid = extract_questions(tiny, questions, [None] * len(questions), prompt_style="plain")
    prompts = encode_prompts(tiny, [format_prompt(tiny, q, "plain") for q in questions], "plain")
    real = next_token_logits(tiny, prompts)
    readout = lens.lens_logits(tiny, torch.from_numpy(resid[:, -1]))
    torch.testing.assert_close(readout, real, atol=1e-4, rtol=1e-4)


def test_lens_tracks_each_answer_through_the_layers(tiny, npo_last_block, tiny_target):
    result = lens.run(tiny, npo_last_block, tiny_target)
    assert len(result.items) == len(tiny_target.forget)
    original, unlearned = result.by_layer["original"], result.by_layer["unlearned"]
    assert original["top1"][-1] == 1.0  # the original answers every forget question
    assert unlearned["top1"][-1] < 0.5
    summary = result.summary()
    assert summary["original"]["output_median_rank"] == 1.0
    assert summary["unlearned"]["output_median_rank"] > 1.0
    for model, curves in result.by_layer.items():
        best = summary[model]["best_layer"]
        assert summary[model]["best_median_rank"] == curves["median_rank"][best]
        assert curves["median_rank"][best] == min(curves["median_rank"])
        assert curves["median_rank"][:best].count(min(curves["median_rank"])) == 0
    # below the changed block both models are the same network
    np.testing.assert_allclose(original["mean_prob"][:-1], unlearned["mean_prob"][:-1], atol=1e-5)
    row = result.items[0]
    assert len(row["original_rank"]) == len(result.layers) and min(row["original_rank"]) >= 1
    assert lens.LensResult.from_json(result.to_json()) == result
    assert isinstance(lens_ranks(result), Figure)


def test_lens_control_is_the_other_answers_of_each_items_kind(tiny, tiny_gold, tiny_target):
    result = lens.run(tiny, tiny_gold, tiny_target)
    group_of = {item.answer: item.group for item in tiny_target.forget}
    for item, row in zip(tiny_target.forget, result.items):
        same_kind = {a.strip() for a, g in group_of.items() if g == item.group} - {item.answer}
        assert {t.strip() for t in row["control_tokens"]} <= same_kind
        assert row["control_tokens"] and row["answer_token"] not in row["control_tokens"]
    layer = lens.best_inner_layer(result.by_layer["original"]["median_rank"])

    def specificity(model):
        rows = result.items
        answer = np.log2([r[f"{model}_rank"][layer] for r in rows])
        return np.mean(answer - np.log2([r[f"{model}_control_rank"][layer] for r in rows]))

    # the original ranks its answers above the other answers of their kind; the gold model,
    # which never saw the forget people, ranks them no better than a few of those
    assert specificity("original") < -1.5
    assert specificity("unlearned") > specificity("original") + 1.0
    # ranks read in one pass for several tokens are the ranks counted one token at a time
    resid = np.random.default_rng(0).normal(size=(3, 2, tiny.d_model)).astype(np.float32)
    ranks, probs = lens.answer_ranks(tiny, resid, [[5, 9], [7], [1, 2]])
    logits = lens.lens_logits(tiny, torch.from_numpy(resid[1, 0]))
    assert ranks[1, 0, 0] == (logits > logits[7]).sum() + 1 and np.isnan(ranks[1, 0, 1])
    assert probs[0, 1, 1] == pytest.approx(float(torch.softmax(lens.lens_logits(
        tiny, torch.from_numpy(resid[0, 1])), -1)[9]), abs=1e-6)  # fmt: skip


def test_probe_fits_in_two_processes_equal_the_fits_in_one():
    rng = np.random.default_rng(0)
    n = 40
    examples = linear._Examples(
        name="truth",
        texts=[""] * n,
        continuations=[None] * n,
        as_prompt=False,
        labels=rng.integers(0, 2, n),
        groups=np.arange(n) // 2,
        scored=np.arange(n) >= 8,
        chance=0.5,
        n_items=n // 2,
    )
    signal = np.array([0.0, 0.5, 2.0])[None, :, None]
    feats = rng.normal(size=(n, 3, 16)) + examples.labels[:, None, None] * signal
    settings = linear.ProbeSettings(folds=3)
    threads, pools = torch.get_num_threads(), []

    def parallel(n_jobs):
        pools.append(n_jobs)
        return joblib.Parallel(n_jobs=n_jobs)

    try:
        fitted = []
        for workers in (1, 2):
            torch.set_num_threads(workers)
            with mock.patch.object(linear, "Parallel", parallel):
                fitted.append(linear._fit_all(examples, feats, settings))
    finally:
        torch.set_num_threads(threads)
    assert pools == [1, 2]  # the second arm really ran in two processes
    one, two = fitted
    np.testing.assert_array_equal(one.correct, two.correct)
    np.testing.assert_array_equal(one.control, two.control)
    held = one.correct[:, examples.scored]
    assert held[2].mean() > 0.9 > held[0].mean()  # the signal is at layer 2
