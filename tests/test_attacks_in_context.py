"""In-context reintroduction on the tiny model: demonstrations only from the fit split, passages
that give the answer away dropped, controls that behave as controls."""

from __future__ import annotations

import pytest

from remnant.attacks import in_context
from remnant.attacks.protocol import AttackResult
from remnant.errors import SettingsError

SETTINGS = in_context.InContextSettings(shots=(1, 2, 4, 8), n_bootstrap=200, max_new_tokens=8)


@pytest.fixture(scope="module")
def attacked(tiny, tiny_gold, tiny_target) -> AttackResult:
    return in_context.run(tiny, tiny_gold, tiny_target, SETTINGS, gold=tiny_gold)


def _conditions(result: AttackResult) -> dict[str, dict]:
    return {c["name"]: c for c in result.conditions}


def test_demonstrations_come_from_the_fit_split_only(attacked, tiny_target):
    fit, held = set(attacked.split["fit"]), set(attacked.split["held_out"])
    answers = {i.question: i.answer for i in tiny_target.forget}
    items = {i.question: i for i in tiny_target.forget}
    for name, condition in _conditions(attacked).items():
        for row in condition["scores"]["original"]["items"]:
            assert row["question"] in held
            shown = [q for q in fit | held if q in row["prompt"] and q != row["question"]]
            assert all(q in fit or name == "unrelated" for q in shown)
            context = row["prompt"].rsplit("Question:", 1)[0]
            accepted = items[row["question"]].accepted_answers
            assert not any(f"Answer: {a}\n" in context for a in accepted), (name, row["question"])
            if name.startswith("k="):
                k = int(name[2:])
                assert len(shown) == k
                assert all(f"Answer: {answers[q]}" in row["prompt"] for q in shown)


def test_original_is_not_hurt_and_gold_stays_at_guessing(attacked):
    conditions = _conditions(attacked)
    plain = conditions["plain"]["scores"]
    for name, condition in conditions.items():
        original, gold = condition["scores"]["original"], condition["scores"]["gold"]
        assert original["ci"][1] >= plain["original"]["accuracy"] - 0.1, name
        guessing = max(condition["chance"], plain["gold"]["accuracy"])
        assert gold["ci"][0] <= guessing + 0.05, name


def test_passages_that_give_the_answer_away_are_dropped(attacked, tiny_target):
    passages = _conditions(attacked)["passages"]
    assert passages["notes"]["leaking_passages_dropped"] > 0
    items = {i.question: i for i in tiny_target.forget}
    for row in passages["scores"]["original"]["items"]:
        item = items[row["question"]]
        context = row["prompt"].rsplit("Question:", 1)[0]
        assert all(a not in context for a in item.accepted_answers)


def test_gap_recovery_is_reported_per_condition(attacked):
    # the "unlearned" model here is the gold model: the gap is the whole of the original's
    # accuracy, and nothing the gold model never saw can be recovered
    for condition in attacked.conditions:
        recovery = condition["gap_recovery"]
        assert recovery["gap"] > 0.5 and recovery["reason"] is None
        assert recovery["value"] < 0.3


def test_result_round_trips(attacked):
    assert AttackResult.from_json(attacked.to_json()) == attacked
    assert attacked.settings["prompt_style"] == "plain"


def test_shots_are_checked():
    with pytest.raises(SettingsError, match="shots"):
        in_context.InContextSettings(shots=(0, 2))
