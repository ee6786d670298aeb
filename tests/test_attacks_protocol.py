"""The attack protocol: entity-grouped fit / held-out splits, conditions and gap recovery."""

from __future__ import annotations

import pytest

from remnant.attacks.protocol import (
    BASELINE,
    AttackResult,
    AttackSettings,
    Condition,
    entity_groups,
    gap_recovery,
    plain_condition,
    run_conditions,
    split_forget,
)
from remnant.errors import SettingsError, TargetError
from remnant.scoring import format_dialogue, format_prompt
from remnant.targets import Target, load_target


@pytest.mark.parametrize("seed", range(5))
def test_split_never_shares_an_entity(tiny_target, seed):
    split = split_forget(tiny_target, 0.5, seed)
    fit = {tiny_target.subject_of(item) for item in split.fit}
    held = {tiny_target.subject_of(item) for item in split.held_out}
    assert fit and held and not fit & held
    assert len(split.fit) + len(split.held_out) == len(tiny_target.forget)
    assert len(split.held_out) >= 0.5 * len(tiny_target.forget)


def test_split_is_seeded(tiny_target):
    assert split_forget(tiny_target, 0.5, 3) == split_forget(tiny_target, 0.5, 3)
    splits = {split_forget(tiny_target, 0.5, seed).held_out for seed in range(6)}
    assert len(splits) > 1


def test_single_subject_target_is_grouped_by_answers():
    target = load_target("demo")
    groups = entity_groups(target, target.forget)
    by_question = dict(zip((i.question for i in target.forget), groups))
    # the Mona Lisa question names the Louvre, the answer of another item: they go together
    louvre = "What is the most famous art museum in Paris?"
    mona = "What famous painting by Leonardo da Vinci hangs in the Louvre in Paris?"
    assert by_question[louvre] == by_question[mona]
    assert len(set(groups)) > len(target.forget) // 2
    split = split_forget(target, 0.5, 0)
    fit_answers = {a.lower() for item in split.fit for a in item.accepted_answers}
    for item in split.held_out:  # no held-out answer is named by a fit question
        assert not any(a.lower() in q.question.lower() for q in split.fit for a in [item.answer])
        assert item.answer.lower() not in fit_answers


def test_one_group_cannot_be_split():
    target = Target.from_data(
        {
            "name": "one",
            "keywords": ["Zed"],
            "forget": [
                {"question": "Where does Zed live?", "answer": "Oslo"},
                {"question": "What city is home to Zed?", "answer": "Oslo"},
            ],
        }
    )
    with pytest.raises(TargetError, match="at least two groups"):
        split_forget(target)


def test_held_out_fraction_is_checked():
    with pytest.raises(SettingsError, match="held_out_fraction"):
        AttackSettings(held_out_fraction=1.0)


def test_gap_recovery():
    full = gap_recovery([1, 1, 0, 0] * 5, [0] * 20, [1] * 20, n_bootstrap=200)
    assert full["value"] == pytest.approx(0.5)
    assert full["ci"][0] < 0.5 < full["ci"][1]
    assert full["gap"] == 1.0 and full["reason"] is None
    none = gap_recovery([1] * 10, [0, 1] * 5, [1, 0] * 5, n_bootstrap=200)
    assert none["value"] is None and none["ci"] == [None, None]
    assert "includes 0" in none["reason"]


def test_dialogue_layouts(tiny):
    turns = [("system", "Read: x."), ("user", "Q1?"), ("assistant", "A1"), ("user", "Q2?")]
    plain = format_dialogue(tiny, turns, "plain")
    assert plain == "Read: x.\n\nQuestion: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer:"
    assert format_dialogue(tiny, turns, "completion", "Sure:") == "Read: x.\n\nQ1? A1\nQ2? Sure:"
    assert format_dialogue(tiny, [("user", "Q?")], "plain") == format_prompt(tiny, "Q?", "plain")
    with pytest.raises(ValueError, match="ending with the user"):
        format_dialogue(tiny, [("user", "Q?"), ("assistant", "A")], "plain")


def test_run_conditions_scores_every_model(tiny, tiny_gold, tiny_target):
    settings = AttackSettings(n_bootstrap=100, max_new_tokens=8)
    split = split_forget(tiny_target, 0.5, settings.seed)
    baseline = plain_condition(tiny, split.held_out, "plain")
    # asking about the wrong person: the original model's accuracy must fall
    swapped = Condition(
        name="swapped",
        category="control",
        items=split.held_out,
        bases=baseline.bases,
        prompts=tuple(reversed(baseline.prompts)),
    )
    models = {"original": tiny, "unlearned": tiny_gold, "gold": tiny_gold}
    result = run_conditions("test", models, tiny_target, settings, split, [baseline, swapped])
    plain, other = result.conditions
    assert plain["name"] == BASELINE
    assert plain["scores"]["original"]["accuracy"] > 0.8
    assert plain["scores"]["gold"]["accuracy"] < 0.4
    assert other["scores"]["original"]["accuracy"] < plain["scores"]["original"]["accuracy"]
    assert plain["gap_recovery"]["value"] == 0.0  # the baseline recovers nothing by definition
    assert AttackResult.from_json(result.to_json()) == result
    assert [row["condition"] for row in result.summary()] == [BASELINE, "swapped"]
