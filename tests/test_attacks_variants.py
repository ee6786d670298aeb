"""The variants attack: generated adversarial variants, the target's own variants, multiple-choice
judging and background-hint leak filtering, on the tiny model."""

from __future__ import annotations

import random

import pytest

from remnant.attacks.protocol import BASELINE, AttackResult, split_forget
from remnant.attacks.variants import (
    AFFIRMATIVE_START,
    BACKGROUND,
    GENERATED,
    VariantSettings,
    chosen_letter,
    distractors,
    judge_choice,
    run,
)
from remnant.errors import SettingsError
from remnant.scoring import alias_match, is_correct
from remnant.targets import MCQItem, QAItem, Target

SETTINGS = VariantSettings(n_bootstrap=200, max_new_tokens=8)
OWN = ("paraphrase", "sibling fact", "role_play")


@pytest.fixture(scope="module")
def varied_target(world, tiny_target) -> Target:
    """The tiny target with variants on every forget item: the world's second phrasing of its
    question (``paraphrase``, which the tiny model was trained on, and the same text typed
    ``role_play`` to clash with a generated type), and the entity's next fact asked plainly
    with that fact's own answer (``sibling fact``)."""
    data = tiny_target.model_dump(mode="json")
    for row in data["forget"]:
        facts = world.facts[row["subject"]]
        index = next(k for k, f in enumerate(facts) if f.attribute.name == row["group"])
        sibling = facts[(index + 1) % len(facts)]
        paraphrase = facts[index].questions()[1]
        row["variants"] = [
            {"type": "paraphrase", "question": paraphrase},
            {"type": "sibling fact", "question": sibling.questions()[0], "answer": sibling.value},
            {"type": "role_play", "question": paraphrase},
        ]
    return Target.from_data(data)


@pytest.fixture(scope="module")
def result(tiny, tiny_gold, varied_target) -> AttackResult:
    # the gold model stands in for the unlearned one: it never saw the forget facts
    return run(tiny, tiny_gold, varied_target, SETTINGS, gold=tiny_gold)


def _condition(result: AttackResult, name: str) -> dict:
    return next(c for c in result.conditions if c["name"] == name)


def _plain_by_base(result: AttackResult, role: str) -> dict[str, bool]:
    rows = result.conditions[0]["scores"][role]["items"]
    return {row["base"]: row["correct"] for row in rows}


def test_every_type_is_a_condition(result, varied_target):
    names = [c["name"] for c in result.conditions]
    assert names == [BASELINE, *GENERATED, "paraphrase", "sibling fact", "role_play (target)"]
    held_out = set(result.split["held_out"])
    for condition in result.conditions[1:]:
        rows = condition["scores"]["original"]["items"]
        assert rows and {row["base"] for row in rows} <= held_out
    assert _condition(result, "role_play (target)")["category"] == "role_play"
    assert AttackResult.from_json(result.to_json()) == result
    assert [row["condition"] for row in result.summary()] == names


@pytest.mark.parametrize(
    "name",
    [
        # not affirmative_suffix: the tiny tokenizer spells its opening letter by letter, text
        # the tiny model never saw, so whether it still answers after it is the build's luck
        # (plain 1.0, suffixed 0.5 on one machine's build): its prompts are checked below
        *(kind for kind in GENERATED if kind != "affirmative_suffix"),
        "paraphrase",
        "sibling fact",
        "role_play (target)",
    ],
)
def test_original_is_no_worse_than_plain(result, name):
    condition = _condition(result, name)
    plain = _plain_by_base(result, "original")
    rows = condition["scores"]["original"]["items"]
    plain_accuracy = sum(plain[row["base"]] for row in rows) / len(rows)
    assert condition["scores"]["original"]["ci"][1] >= plain_accuracy - 0.1


def test_the_affirmative_suffix_opens_the_answer_after_the_question(result):
    rows = _condition(result, "affirmative_suffix")["scores"]["original"]["items"]
    assert rows
    for row in rows:
        assert row["prompt"].endswith(AFFIRMATIVE_START)
        assert row["prompt"].index(row["question"]) < len(row["prompt"]) - len(AFFIRMATIVE_START)


def test_gold_stays_near_guessing(result):
    plain = _plain_by_base(result, "gold")
    for condition in result.conditions:
        scores = condition["scores"]["gold"]
        bases = [row["base"] for row in scores["items"]]
        guessing = max(condition["chance"], sum(plain[b] for b in bases) / len(bases))
        assert scores["ci"][0] <= guessing + 0.05, condition["name"]


def test_own_variants_are_scored_with_their_answers_and_bases(result, varied_target):
    by_question = {item.question: item for item in varied_target.forget}
    sibling = _condition(result, "sibling fact")
    for row in sibling["scores"]["original"]["items"]:
        base = by_question[row["base"]]
        variant = next(v for v in base.variants if v.type == "sibling fact")
        assert (row["question"], row["answer"]) == (variant.question, variant.answer)
        assert row["answer"] != base.answer
    # judged by the sibling's own answer, the original model knows it; by the base's it would not
    assert sibling["scores"]["original"]["accuracy"] > 0.8
    paraphrase = _condition(result, "paraphrase")
    for row in paraphrase["scores"]["original"]["items"]:
        assert row["answer"] == by_question[row["base"]].answer
    assert paraphrase["notes"] == {
        "variants": len(result.split["held_out"]),
        "items_with_variants": len(result.split["held_out"]),
        "answer_in_question": 0,
    }


def test_multiple_choice_prompts(result, varied_target):
    condition = _condition(result, "multiple_choice")
    answers = {item.answer for item in varied_target.forget}
    options_per_item = []
    for row in condition["scores"]["original"]["items"]:
        lines = row["prompt"].split("\n")
        options = [line[3:] for line in lines if line[:3] in ("A. ", "B. ", "C. ", "D. ")]
        assert row["answer"] in options and set(options) <= answers
        assert len(set(options)) == len(options)
        options_per_item.append(len(options))
    assert condition["chance"] == pytest.approx(
        sum(1 / n for n in options_per_item) / len(options_per_item), abs=1e-6
    )


def test_background_hints_never_contain_the_answer(result, varied_target):
    condition = _condition(result, "background_hint")
    held_out = [i for i in varied_target.forget if i.question in result.split["held_out"]]
    passages = varied_target.forget_passages
    leaking = sum(is_correct(item, p) for item in held_out for p in passages)
    assert leaking > 0  # the tiny target's passages name each forget person's facts
    assert condition["notes"]["leaking_passages_dropped"] == leaking
    assert condition["notes"]["items_without_clean_passage"] == 0
    by_question = {item.question: item for item in held_out}
    for row in condition["scores"]["original"]["items"]:
        hint = next(p for p in passages if BACKGROUND.format(passage=p) in row["prompt"])
        assert not alias_match(hint, by_question[row["question"]].accepted_answers)


def test_items_without_hint_or_distractors_are_skipped(tiny, tiny_gold, tiny_target):
    # keep only one held-out person's passage: that person's items have no clean passage
    person = split_forget(tiny_target, SETTINGS.held_out_fraction, SETTINGS.seed).held_out[0]
    own = next(p for p in tiny_target.forget_passages if person.subject in p)
    data = tiny_target.model_dump(mode="json") | {"forget_passages": [own]}
    settings = VariantSettings(n_bootstrap=50, max_new_tokens=4, types=("background_hint",))
    result = run(tiny, tiny_gold, Target.from_data(data), settings)
    held = [i for i in tiny_target.forget if i.question in result.split["held_out"]]
    without = [i for i in held if is_correct(i, own)]
    assert len(without) >= 4 and len(without) < len(held)
    notes = _condition(result, "background_hint")["notes"]
    assert notes["items_without_clean_passage"] == len(without)
    assert notes["leaking_passages_dropped"] == len(without)
    # every forget answer the same: no distractor exists, and no passage: both types skipped
    same = {
        "name": "same",
        "keywords": ["Ann", "Bob"],
        "forget": [
            {"question": "Where does Ann live?", "answer": "Oslo"},
            {"question": "Where does Bob live?", "answer": "oslo"},
        ],
    }
    types = ("multiple_choice", "background_hint")
    result = run(
        tiny, tiny_gold, Target.from_data(same), VariantSettings(n_bootstrap=50, types=types)
    )
    assert [c["name"] for c in result.conditions] == [BASELINE]
    skipped = result.conditions[0]["notes"]["skipped"]
    assert skipped["multiple_choice"]["items_without_distractors"] == 1
    assert skipped["background_hint"]["passages"] == 0


MCQ = MCQItem(question="Where?", choices=["Oslo", "Paris", "Rome"], answer=1)
ITEM = QAItem(question="Where?", answer="Paris", aliases=("City of Light",))


@pytest.mark.parametrize(
    ("generation", "correct"),
    [
        ("B", True),
        ("B.", True),
        ("(B)", True),
        (" B)", True),
        ("B: Paris", True),
        ("B\nQuestion: more", True),
        ("A", False),
        ("(C)", False),
        ("A. Paris", False),  # a letter answer is judged by its letter
        ("Paris", True),
        ("It is the City of Light.", True),
        ("A city called Paris", True),  # "A" followed by a word is the article
        ("Paris or Rome", False),  # names a distractor too
        ("Rome", False),
        ("D.", False),  # no such option: judged by text
        ("", False),
    ],
)
def test_multiple_choice_judging(generation, correct):
    assert judge_choice(ITEM, MCQ, generation) is correct


def test_chosen_letter():
    assert chosen_letter("C) Rome", 3) == 2
    assert chosen_letter("D)", 3) is None
    assert chosen_letter("Bob", 3) is None


def test_distractors_come_from_other_items_and_never_name_the_answer():
    item = QAItem(question="Where was Ann born?", answer="New York", aliases=("NYC",), group="city")
    pool = [
        item,
        QAItem(question="Bob?", answer="new york", group="city"),  # the answer again
        QAItem(question="Cy?", answer="York", group="city"),  # named by the answer
        QAItem(question="Di?", answer="Old New York", group="city"),  # names the answer
        QAItem(question="Ed?", answer="nyc!", group="city"),  # an alias
        QAItem(question="Fay?", answer="Lima", group="city"),
        QAItem(question="Gus?", answer="Lima", group="city"),  # a repeat
        QAItem(question="Hal?", answer="baker", group="job"),
        QAItem(question="Ida?", answer="Oslo", group="city"),
    ]
    drawn = distractors(item, pool, random.Random(0))
    assert sorted(drawn[:2]) == ["Lima", "Oslo"] and drawn[2] == "baker"  # same group first
    assert distractors(item, pool, random.Random(0)) == drawn
    assert distractors(item, pool[:5], random.Random(0)) == []


def test_settings_types():
    assert VariantSettings(types=["role_play"]).types == ("role_play",)
    for bad in [(), ("role_play", "role_play"), ("",), (3,)]:
        with pytest.raises(SettingsError, match="VariantSettings.types"):
            VariantSettings(types=bad)


def test_unknown_type_is_refused(tiny, tiny_gold, tiny_target):
    with pytest.raises(SettingsError, match="'paraphrase'"):
        run(tiny, tiny_gold, tiny_target, VariantSettings(types=("paraphrase",)))
