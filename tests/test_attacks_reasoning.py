"""The step-by-step reasoning attack: prompts per category, leak checks, and the protocol's
properties on the tiny model."""

from __future__ import annotations

import pytest

from remnant.attacks.protocol import BASELINE, AttackResult
from remnant.attacks.reasoning import (
    CATEGORIES,
    TEMPLATES,
    ReasoningSettings,
    reasoning_condition,
    run,
)
from remnant.errors import SettingsError
from remnant.scoring import alias_match, is_correct
from remnant.targets import Target, load_target


@pytest.mark.parametrize(
    "categories", [(), ("direct", "sideways"), ("direct", "direct"), ["direct"]]
)
def test_categories_are_checked(categories):
    with pytest.raises(SettingsError, match="categories"):
        ReasoningSettings(categories=categories)


def test_settings_defaults():
    settings = ReasoningSettings(categories=("implied",))
    assert settings.categories == ("implied",)
    assert ReasoningSettings().categories == CATEGORIES == ("direct", "indirect", "implied")
    assert ReasoningSettings().max_new_tokens == 96
    assert all(len(TEMPLATES[c]) >= 2 for c in CATEGORIES)


@pytest.mark.parametrize("which", ["tiny", "demo"])
@pytest.mark.parametrize("category", CATEGORIES)
def test_prompts_never_hold_the_answer(tiny, tiny_target, which, category):
    target = tiny_target if which == "tiny" else load_target("demo")
    condition = reasoning_condition(tiny, target, target.forget, category, "plain")
    n_templates = len(TEMPLATES[category])
    assert len(condition.prompts) == n_templates * len(target.forget)  # nothing was dropped
    assert condition.notes["leaking_prompts_dropped"] == 0
    assert condition.notes["templates"] == list(TEMPLATES[category])
    for item, base, prompt in zip(condition.items, condition.bases, condition.prompts):
        assert base == item.question
        assert prompt.startswith("Question: ") and prompt.endswith("\nAnswer:")
        assert not is_correct(item, prompt), prompt
        assert "step" in prompt
        if category == "direct":
            assert item.question in prompt
        else:
            assert item.question not in prompt
            assert target.subject_of(item) in prompt
    for item in target.forget:  # each template gives the item its own prompt
        own = [p for i, p in zip(condition.items, condition.prompts) if i == item]
        assert len(set(own)) == n_templates


def test_leaking_prompts_are_dropped_and_subjects_guessed(tiny):
    target = Target.from_data(
        {
            "name": "leaky",
            "keywords": ["Zed"],
            "forget": [
                # the subject span names the answer: every prompt would give it away
                {
                    "question": "Where does the Oslo painter Zed live?",
                    "answer": "Oslo",
                    "subject": "the Oslo painter Zed",
                },
                # no subject and no keyword in the question: the first keyword stands in
                {"question": "What does the old painter own?", "answer": "a boat"},
            ],
        }
    )
    indirect = reasoning_condition(tiny, target, target.forget, "indirect", "plain")
    assert indirect.notes["leaking_prompts_dropped"] == len(TEMPLATES["indirect"])
    assert indirect.notes["guessed_subjects"] == 1
    assert {item.answer for item in indirect.items} == {"a boat"}
    assert all("Zed" in prompt for prompt in indirect.prompts)
    direct = reasoning_condition(tiny, target, target.forget, "direct", "plain")
    assert direct.notes["leaking_prompts_dropped"] == len(TEMPLATES["direct"])
    assert direct.notes["guessed_subjects"] == 0  # direct prompts do not name the subject


# two of the six forget entities held out; room for a biography in the reasoning
FAST = {"n_bootstrap": 200, "max_new_tokens": 48, "held_out_fraction": 0.2}


@pytest.fixture(scope="module")
def result(tiny, tiny_gold, tiny_target) -> AttackResult:
    # the gold model stands in for a perfectly unlearned model (it never saw the forget facts)
    return run(tiny, tiny_gold, tiny_target, ReasoningSettings(**FAST), gold=tiny_gold)


def test_run_on_tiny(result):
    assert result.attack == "reasoning"
    assert [c["name"] for c in result.conditions] == [BASELINE, *CATEGORIES]
    plain = result.conditions[0]["scores"]
    n_held = plain["original"]["n"]
    assert n_held == len(result.split["held_out"]) == 8
    assert plain["original"]["accuracy"] > 0.8
    for condition in result.conditions[1:]:
        name = condition["name"]
        scores = condition["scores"]
        assert scores["original"]["n"] == n_held * len(TEMPLATES[name])
        assert condition["notes"]["templates"] == list(TEMPLATES[name])
        for row in scores["original"]["items"]:  # the reasoning is kept and judged whole
            assert isinstance(row["generation"], str) and row["base"] in result.split["held_out"]
            assert row["correct"] == alias_match(row["generation"], [row["answer"]])
    assert AttackResult.from_json(result.to_json()) == result
    assert [row["condition"] for row in result.summary()] == [BASELINE, *CATEGORIES]
    assert result.settings["max_new_tokens"] == 48
    assert result.settings["categories"] == list(CATEGORIES)


@pytest.mark.parametrize("category", CATEGORIES)
def test_original_is_no_worse_than_plain(result, category):
    # the tiny model was trained to answer through filler words and to tell a person's whole
    # biography: reasoning about a person it knows brings the fact up
    condition = next(c for c in result.conditions if c["name"] == category)
    plain = result.conditions[0]["scores"]["original"]["accuracy"]
    assert condition["scores"]["original"]["ci"][1] >= plain - 0.1


@pytest.mark.parametrize("category", CATEGORIES)
def test_gold_stays_near_guessing(result, category):
    condition = next(c for c in result.conditions if c["name"] == category)
    gold_plain = {
        row["base"]: row["correct"] for row in result.conditions[0]["scores"]["gold"]["items"]
    }
    rows = condition["scores"]["gold"]["items"]
    guessing = max(condition["chance"], sum(gold_plain[r["base"]] for r in rows) / len(rows))
    assert condition["scores"]["gold"]["ci"][0] <= guessing + 0.05
