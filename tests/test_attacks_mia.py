"""Membership inference: scores, AUROC with CIs, comparisons, over-unlearning flags, figure."""

from __future__ import annotations

import random

import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from remnant.attacks.mia import (
    PRIMARY,
    SCORES,
    MIAResult,
    MIASettings,
    auroc_with_ci,
    membership_scores,
    run,
)
from remnant.errors import SettingsError, TargetError
from remnant.reports.figures.mia import mia_roc
from remnant.targets.synthetic import SyntheticWorld, WorldConfig, qa_text

SETTINGS = MIASettings(n_bootstrap=200)


def _qa_texts(items):
    return [qa_text(item.question, item.answer) for item in items]


def _statements(world, entities):
    return [s for e in entities for fact in world.facts[e] for s in fact.statements()]


def test_auroc_with_ci():
    perfect = auroc_with_ci([3, 4, 5], [0, 1, 2], n_bootstrap=100)
    assert perfect["auroc"] == 1.0 and perfect["ci"] == [1.0, 1.0]
    assert perfect["tpr_at_5_fpr"] == 1.0
    assert auroc_with_ci([0, 1], [2, 3], n_bootstrap=100)["auroc"] == 0.0
    members, others = [0.1, 0.5, 0.5, 0.9, 0.3], [0.2, 0.5, 0.05, 0.4]
    mixed = auroc_with_ci(members, others, n_bootstrap=500, seed=1)
    labels = [1] * len(members) + [0] * len(others)
    assert mixed["auroc"] == pytest.approx(roc_auc_score(labels, members + others))
    assert mixed["ci"][0] <= mixed["auroc"] <= mixed["ci"][1]
    assert mixed == auroc_with_ci(members, others, n_bootstrap=500, seed=1)
    assert mixed["roc"]["fpr"][0] == 0.0 and mixed["roc"]["tpr"][-1] == 1.0


def test_same_distribution_is_at_chance(tiny, tiny_target):
    texts = _qa_texts(tiny_target.retain)  # all trained on
    order = random.Random(0).sample(range(len(texts)), len(texts))
    half = len(order) // 2
    scores = membership_scores(tiny, texts, SETTINGS)
    for name in SCORES:
        values = scores[name]
        found = auroc_with_ci(
            [values[i] for i in order[:half]], [values[i] for i in order[half:]], n_bootstrap=200
        )
        assert found["ci"][0] <= 0.5 <= found["ci"][1] or abs(found["auroc"] - 0.5) < 0.2, name


def test_own_training_facts_beat_unseen_ones(tiny, world):
    other = SyntheticWorld(WorldConfig(seed=7))
    assert not set(other.entities[:4]) & set(world.entities)
    seen = _statements(world, world.entities[6:10])
    unseen = _statements(other, other.entities[:4])
    scores = membership_scores(tiny, seen + unseen, SETTINGS)
    for name in ("loss", "min_k_pp"):
        values = scores[name]
        found = auroc_with_ci(values[: len(seen)], values[len(seen) :], n_bootstrap=200)
        assert found["auroc"] > 0.8, (name, found["auroc"])


def test_min_k_pp_is_exact_and_batch_invariant(tiny, world):
    texts = _statements(world, world.entities[:1])[:3] + _qa_texts(world.target().forget[:2])
    texts.append(" ".join(texts[:4]))  # a long one, so batches are padded
    text = texts[-1]
    ids = torch.tensor([tiny.tokenizer(text).input_ids])
    with torch.no_grad():
        logits = tiny.hf_model(input_ids=ids).logits[0, :-1].double()
    logp = logits.log_softmax(-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    var = (p * logp**2).sum(-1) - mu**2  # the textbook form; the module uses the stable one
    chosen = logp[torch.arange(len(logp)), ids[0, 1:]]
    z = (chosen - mu) / var.sqrt()
    settings = MIASettings(k=0.3, k_sweep=(0.3, 1.0))
    count = max(1, int(0.3 * len(z)))
    single = membership_scores(tiny, [text], settings)
    assert single["n_tokens"] == [len(z)]
    assert single["min_k_pp"][0] == pytest.approx(float(z.sort().values[:count].mean()), abs=1e-4)
    assert single["min_k"][0] == pytest.approx(float(chosen.sort().values[:count].mean()), abs=1e-4)
    assert single["loss"][0] == pytest.approx(float(chosen.mean()), abs=1e-5)
    assert single["min_k@1"] == pytest.approx(single["loss"], abs=1e-9)

    one = membership_scores(tiny, texts, MIASettings(batch_size=1, k=0.3, k_sweep=(0.3, 1.0)))
    eight = membership_scores(tiny, texts, MIASettings(batch_size=8, k=0.3, k_sweep=(0.3, 1.0)))
    assert one.keys() == eight.keys()
    for name in one:
        assert one[name] == pytest.approx(eight[name], abs=1e-5), name
    assert one["min_k_pp"][-1] == pytest.approx(single["min_k_pp"][0], abs=1e-5)


@pytest.mark.parametrize(
    "bad", [{"k": 0}, {"k": 1.5}, {"k_sweep": ()}, {"k_sweep": (0.1, 0)}, {"texts": "all"}]
)
def test_bad_settings(bad):
    with pytest.raises(SettingsError):
        MIASettings(**bad)


def test_run_with_gold_model(tiny, tiny_gold, tiny_target):
    result = run(tiny, tiny_gold, tiny_target, SETTINGS, gold=tiny_gold)
    assert MIAResult.from_json(result.to_json()) == result
    assert set(result.comparisons) == {"passages", "qa"} and not result.skipped
    qa = result.comparisons["qa"]
    assert qa["n_members"] == len(tiny_target.forget)
    assert set(qa["roles"]) == {"original", "unlearned", "gold"}
    original, gold = (qa["roles"][role]["scores"][PRIMARY] for role in ("original", "gold"))
    assert gold["auroc"] < original["auroc"]
    # the unlearned model here is the gold model itself: exact unlearning is not over-unlearning
    assert all(
        c["roles"]["unlearned"]["over_unlearning"] is False for c in result.comparisons.values()
    )
    assert qa["roles"]["original"]["over_unlearning"] is None and not result.flags
    record = qa["roles"]["original"]
    assert [row["k"] for row in record["k_sweep"]] == list(SETTINGS.k_sweep)
    assert len(record["texts"]) == len(tiny_target.forget) + len(tiny_target.retain)
    assert set(result.summary()["comparisons"]["passages"]) == {"original", "unlearned", "gold"}
    assert set(result.seconds) == {"original", "unlearned", "gold"}
    figure = mia_roc(result)
    assert isinstance(figure, Figure) and len(figure.axes) == 2


def test_below_chance_without_gold_is_flagged(tiny, tiny_gold, tiny_target):
    settings = MIASettings(n_bootstrap=200, texts="qa")
    result = run(tiny, tiny_gold, tiny_target, settings)
    unlearned = result.comparisons["qa"]["roles"]["unlearned"]
    assert unlearned["below_chance"] and unlearned["over_unlearning"] is True
    assert len(result.flags) == 1 and "over-unlearning" in result.flags[0]
    assert "without a gold model" in result.flags[0]


def test_comparisons_need_two_texts_a_side(tiny, tiny_target):
    one_passage = {"forget_passages": tiny_target.forget_passages[:1]}
    no_passages = tiny_target.model_copy(update=one_passage | {"retain": tiny_target.retain[:6]})
    with pytest.raises(TargetError, match="nothing to compare"):
        run(tiny, tiny, no_passages.model_copy(update={"retain": ()}), SETTINGS)
    result = run(tiny, tiny, no_passages, MIASettings(n_bootstrap=50))
    assert set(result.comparisons) == {"qa"} and "has 1 and 6" in result.skipped["passages"]
