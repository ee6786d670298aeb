"""Relearning on the tiny model: fine-tuning on the fit split brings the held-out facts of a
GA-unlearned model back above the gold model's line, the gold model learns nothing about the
held-out people from it, copies are trained, and retraining on T chooses its rate on held-out
folds of whole entities."""

from __future__ import annotations

import pytest

from remnant.attacks import relearn
from remnant.attacks.protocol import MODEL_WORK, entity_groups
from remnant.errors import SettingsError, TargetError

#: lr 3e-4: at 1e-4 the 24 steps brought the GA model's held-out facts back above the gold line
#: on one machine and not on another (0.42 before, 0.50 after; the tiny models' floats move with
#: the CPU); at 3e-4 they come back to 0.75 there while the gold model gains 0.17.
SETTINGS = relearn.RelearnSettings(
    lora_rank=0, lr=3e-4, steps=24, eval_every=8, rtt_lrs=(1e-4, 3e-4), n_bootstrap=300,
    max_new_tokens=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def relearned(tiny, tiny_ga, tiny_gold, tiny_target):
    hashes = {m: m.content_hash for m in (tiny, tiny_ga, tiny_gold)}
    MODEL_WORK.clear()  # computed here, not kept from another module's run
    return relearn.run(tiny, tiny_ga, tiny_target, SETTINGS, gold=tiny_gold), hashes


def _curves(result):
    return {curve["data"]: curve for curve in result.curves}


def test_fit_split_relearning_restores_held_out_facts_above_the_gold_line(relearned):
    result, _ = relearned
    forget = _curves(result)["forget"]
    assert result.line == "gold"
    assert forget["steps"] == [0, 8, 16, 24]
    assert forget["recovered"] and forget["above_line"]["ci"][0] >= 0.2
    assert forget["gain"]["ci"][0] > 0, "relearning must raise the unlearned model's accuracy"
    gold = forget["points"]["gold"]
    assert gold[-1]["accuracy"] <= gold[0]["accuracy"] + 0.2, "gold must not learn held-out facts"
    assert all(p["accuracy"] >= 0.9 for p in forget["points"]["original"])
    held = set(result.split["held_out"])
    for role, scores in forget["final"].items():
        assert {row["question"] for row in scores["items"]} == held, role
    assert len(forget["loss"]["unlearned"]) == SETTINGS.steps
    assert forget["loss"]["unlearned"][-1] < forget["loss"]["unlearned"][0]


def test_every_attack_trains_a_copy(relearned):
    result, hashes = relearned
    for model, before in hashes.items():
        model.weights_changed()  # recompute, do not trust the cached hash
        assert model.content_hash == before
    assert {m["content_hash"] for m in result.models.values()} == set(hashes.values())


def test_each_kind_of_data_is_a_curve_and_leaks_no_held_out_answer(relearned, tiny_target):
    result, _ = relearned
    curves = _curves(result)
    assert list(curves) == ["forget", "unrelated", "retain"]
    forget = curves["forget"]["notes"]
    assert forget["fit_items"] == len(result.split["fit"])
    kept = forget["passages"]
    assert kept + forget["passages_giving_held_out_answers_dropped"] == len(
        tiny_target.forget_passages
    )
    assert curves["unrelated"]["n_examples"] == min(10, len(tiny_target.unrelated_passages))


def test_retraining_on_t_holds_out_whole_entities_and_says_the_rate_was_chosen_on_them(
    relearned, tiny_target
):
    result, _ = relearned
    rtt = result.rtt
    folds = rtt["folds"]
    assert len(folds) == SETTINGS.rtt_folds and rtt["rounds"] == [0, 1]
    questions = [q for fold in folds for q in fold]
    assert sorted(questions) == sorted(item.question for item in tiny_target.forget)
    groups = dict(zip((i.question for i in tiny_target.forget),
                      entity_groups(tiny_target, tiny_target.forget)))  # fmt: skip
    for k, fold in enumerate(folds):
        others = {groups[q] for j, f in enumerate(folds) if j != k for q in f}
        assert not {groups[q] for q in fold} & others, "an entity is split across folds"
    assert rtt["n"] == len(folds[0]) + len(folds[1])
    assert rtt["selected_on_held_out"] is True
    for role, best in rtt["best"].items():
        scores = rtt["by_lr"][role]
        assert set(scores) == {"0.0001", "0.0003"}
        assert best["accuracy"] == max(s["accuracy"] for s in scores.values()), role
    assert rtt["best"]["gold"]["accuracy"] <= 0.25


def test_settings_and_targets_are_checked(tiny, tiny_ga, tiny_target):
    with pytest.raises(SettingsError, match="data"):
        relearn.RelearnSettings(data=("wikipedia",))
    with pytest.raises(SettingsError, match="rtt_rounds"):
        relearn.RelearnSettings(rtt_folds=2, rtt_rounds=3)
    bare = tiny_target.model_copy(update={"unrelated_passages": [], "retain": []})
    with pytest.raises(TargetError, match="none of the training data"):
        relearn.run(tiny, tiny_ga, bare, relearn.RelearnSettings(data=("unrelated", "retain")))
    with pytest.raises(TargetError, match="folds"):
        relearn.run(tiny, tiny_ga, tiny_target, relearn.RelearnSettings(rtt_folds=500))


def test_a_second_audited_model_reuses_the_original_and_gold_runs(
    relearned, tiny, tiny_gold, tiny_target
):
    result, _ = relearned
    # the gold model audited against the same original and gold: every role's runs are kept
    again = relearn.run(tiny, tiny_gold, tiny_target, SETTINGS, gold=tiny_gold)
    assert max(again.seconds.values()) < min(result.seconds.values()) / 10
    for kept, first in zip(again.curves, result.curves):
        assert kept["final"]["original"] == first["final"]["original"]
        assert kept["final"]["unlearned"] == kept["final"]["gold"] == first["final"]["gold"]
    assert again.rtt["best"]["gold"] == result.rtt["best"]["gold"]
