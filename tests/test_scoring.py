"""Behavioural scoring on the tiny model, checked against hand computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from remnant.errors import AnswerTokenizationError, NothingKnownError, RemnantError
from remnant.models.accounting import TOKENS
from remnant.scoring import (
    ROUGE_L_THRESHOLD,
    EvalResult,
    ScoringSettings,
    alias_match,
    bootstrap_ci,
    encode_answers,
    encode_prompts,
    evaluate,
    format_prompt,
    generate,
    is_correct,
    known_forget_items,
    match_label,
    normalize,
    reference_answers,
    resolve_style,
    rouge_l_recall,
    score_mcq,
    score_qa,
    sequence_logprobs,
)
from remnant.scoring.batching import MIN_SHARED_PREFIX, SharedPrefix, next_token_logits
from remnant.targets import QAItem, Target, load_target

FAST = ScoringSettings(max_new_tokens=8, batch_size=8, n_bootstrap=200)


def test_text_matching_rules():
    assert normalize("  Ulm, Germany! ") == "ulm germany"
    assert alias_match("He was born in Ulm, Germany.", ["Ulm"])
    assert not alias_match("He was born in Ulmstadt.", ["Ulm"])
    assert alias_match("nineteen oh five", ["1905", "nineteen oh five"])
    assert not alias_match("", ["x"])
    assert rouge_l_recall("the theory of relativity", "relativity theory of the") == 0.5
    assert rouge_l_recall("general relativity", "it is general relativity") == 1.0
    assert rouge_l_recall("a b c", "") == 0.0


def test_is_correct_follows_the_item_match_mode():
    alias = QAItem(question="Where was Ann born?", answer="Ulm", aliases=("Neu-Ulm",))
    assert alias.match == "alias"
    assert is_correct(alias, "She was born in Ulm, Germany.")
    assert is_correct(alias, "In neu ulm.")
    assert not is_correct(alias, "She was born in Ulmstadt.")
    assert not is_correct(alias, "")
    reference = "She was born in the city of Ulm"  # 8 words
    rouge = QAItem(question="Where was Ann born?", answer=reference, match="rouge_l")
    assert ROUGE_L_THRESHOLD == 0.5
    assert is_correct(rouge, reference) and is_correct(rouge, f"Well, {reference.lower()}!")
    assert is_correct(rouge, "she was born in Ulm")  # 5/8 of the words, in order
    assert rouge_l_recall(reference, "born in the city") == 0.5
    assert is_correct(rouge, "born in the city")  # exactly half: correct
    assert not is_correct(rouge, "born in Ulm")  # 3/8
    assert not is_correct(rouge, "Ulm city the of in born was she")  # the words, out of order
    by_alias = QAItem(question="Where was Ann born?", answer="Ulm", aliases=("Munich",))
    assert is_correct(by_alias, "Munich")
    assert not is_correct(by_alias.model_copy(update={"match": "rouge_l"}), "Munich")  # no aliases
    assert match_label([alias, alias]) == "alias" and match_label([rouge]) == "rouge_l"
    assert match_label([alias, rouge]) == "mixed" and match_label([]) is None


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [1, 0, 1, 1, 0, 1, 1, 1]
    low, high = bootstrap_ci(values, seed=3)
    assert low <= np.mean(values) <= high and low < high
    assert bootstrap_ci(values, seed=3) == (low, high)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_ci([]) == (None, None)


def test_plain_style_is_chosen_without_a_chat_template(tiny):
    assert resolve_style(tiny, "auto") == "plain"
    with pytest.raises(RemnantError, match="no chat template"):
        resolve_style(tiny, "chat")
    assert format_prompt(tiny, "Q?", "plain") == "Question: Q?\nAnswer:"


def test_answer_logprob_matches_a_hand_computation(tiny, tiny_target):
    item = tiny_target.forget[0]
    scored = score_qa(tiny, [item], FAST)["items"][0]
    prompt = tiny.tokenizer(f"Question: {item.question}\nAnswer:").input_ids
    answer = tiny.tokenizer(" " + item.answer, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logprobs = torch.log_softmax(tiny.hf_model(ids).logits[0], dim=-1)
    by_hand = sum(logprobs[len(prompt) - 1 + k, tok].item() for k, tok in enumerate(answer))
    assert scored["logprob_sum"] == pytest.approx(by_hand, abs=1e-4)
    assert scored["logprob_mean"] == pytest.approx(by_hand / len(answer), abs=1e-4)
    assert scored["n_answer_tokens"] == len(answer)


def test_padding_side_and_batch_size_do_not_change_logprobs(tiny, tiny_target):
    items = list(tiny_target.forget[:6]) + list(tiny_target.retain[:6])
    prompts = encode_prompts(
        tiny, [format_prompt(tiny, i.question, "plain") for i in items], "plain"
    )
    answers = encode_answers(tiny, [i.answer for i in items], "plain")
    right = sequence_logprobs(tiny, prompts, answers, batch_size=12, padding_side="right")
    left = sequence_logprobs(tiny, prompts, answers, batch_size=12, padding_side="left")
    single = sequence_logprobs(tiny, prompts, answers, batch_size=1)
    for a, b, c in zip(right, left, single):
        np.testing.assert_allclose(a, c, atol=1e-5)
        np.testing.assert_allclose(b, c, atol=1e-5)


def test_a_shared_prompt_prefix_is_run_once_and_changes_no_score(tiny, tiny_target):
    items = list(tiny_target.forget[:5]) + list(tiny_target.retain[:5])
    preamble = tiny.tokenizer.encode("A quiz about the people of this world. ")
    prompts = [
        preamble + ids
        for ids in encode_prompts(
            tiny, [format_prompt(tiny, i.question, "plain") for i in items], "plain"
        )
    ]
    answers = encode_answers(tiny, [i.answer for i in items], "plain")
    shared = SharedPrefix(tiny, prompts)
    assert shared.length >= len(preamble) >= MIN_SHARED_PREFIX
    counted = TOKENS.snapshot()
    left = sequence_logprobs(tiny, prompts, answers, batch_size=4)
    pushed = TOKENS.since(counted)["forward"]
    right = sequence_logprobs(tiny, prompts, answers, batch_size=4, padding_side="right")
    for a, b in zip(left, right):
        np.testing.assert_allclose(a, b, atol=1e-5)
    n_tokens = sum(len(p) + len(a) for p, a in zip(prompts, answers))
    assert pushed == n_tokens - (len(prompts) - 1) * shared.length  # the prefix once
    logits = next_token_logits(tiny, prompts, batch_size=4)
    with torch.no_grad():
        for row, ids in zip(logits, prompts):
            alone = tiny.hf_model(torch.tensor([ids])).logits[0, -1]
            torch.testing.assert_close(row, alone.float(), atol=1e-4, rtol=0)
    shared_run = generate(tiny, prompts, max_new_tokens=6, batch_size=4)
    # a hook may treat rows differently: every token is then run
    with tiny.bridge.hooks(fwd_hooks=[("blocks.0.hook_out", lambda tensor, hook: tensor)]):
        assert SharedPrefix(tiny, prompts).length == 0
        every_token_run = generate(tiny, prompts, max_new_tokens=6, batch_size=4)
    assert shared_run == every_token_run and len(set(shared_run)) > 1  # a mix-up would show


def test_empty_answer_tokenisation_is_refused(tiny):
    with pytest.raises(AnswerTokenizationError, match="tokenises to nothing"):
        encode_answers(tiny, [""], "plain")


def test_evaluate_is_deterministic_and_reports_every_split(tiny, tiny_target):
    first = evaluate(tiny, tiny_target, FAST)
    second = evaluate(tiny, tiny_target, FAST)
    assert first.to_dict() == second.to_dict()
    assert set(first.splits) == {"forget", "retain", "mcq"}
    forget = first.splits["forget"]
    assert forget["n"] == len(tiny_target.forget) and forget["accuracy"] >= 0.95
    assert forget["ci"][0] <= forget["accuracy"] <= forget["ci"][1]
    assert first.settings == FAST.record(prompt_style="plain")
    assert type(first).from_json(first.to_json()) == first
    summary = first.summary()
    assert set(summary) == {"forget", "retain", "mcq"}
    assert summary["forget"] == {
        "n": forget["n"],
        "accuracy": forget["accuracy"],
        "ci": forget["ci"],
        "answered_accuracy": forget["answered_accuracy"],
        "match": "alias",
    }
    mcq = first.splits["mcq"]
    assert summary["mcq"]["likelihood_accuracy"] == mcq["likelihood_accuracy"]
    assert summary["mcq"]["chance"] == mcq["chance"] == 0.25
    assert set(summary["mcq"]) == {
        "n",
        "accuracy",
        "ci",
        "answered_accuracy",
        "likelihood_accuracy",
        "chance",
    }
    assert EvalResult.from_dict(first.to_dict()).summary() == summary


def test_greedy_generation_is_batch_invariant(tiny, tiny_target):
    items = [*tiny_target.forget, *tiny_target.retain]
    prompts = encode_prompts(
        tiny, [format_prompt(tiny, i.question, "plain") for i in items], "plain"
    )
    texts = {b: generate(tiny, prompts, max_new_tokens=12, batch_size=b) for b in (1, 7, 16)}
    assert len({len(p) for p in prompts}) > 1  # batches mix lengths: padding is exercised
    assert texts[7] == texts[1] and texts[16] == texts[1]
    assert all(texts[1])


def test_the_plain_decoder_holds_the_live_weights_and_decodes_as_the_bridge_does(
    monkeypatch, tiny, tiny_target
):
    from remnant.models.loading import load_copy
    from remnant.scoring import generation

    items = [*tiny_target.forget, *tiny_target.retain]
    prompts = encode_prompts(
        tiny, [format_prompt(tiny, i.question, "plain") for i in items], "plain"
    )
    needs = [1 + i % 11 for i in range(len(prompts))]  # rows leave the batch at different steps
    # the tiny model never ends an answer; a line break does here, so rows also end early
    newline = tiny.tokenizer.encode("\n", add_special_tokens=False)
    monkeypatch.setattr(generation, "_eos_ids", lambda model: newline)
    copy = load_copy(tiny)
    with torch.no_grad():
        copy.parameters["model.embed_tokens.weight"].mul_(-1.0)  # in place
    live = {id(tensor) for tensor in copy.parameters.values()}
    assert all(id(p) in live for p in copy.decoder.parameters())
    decoded = []
    for model in (tiny, copy):
        assert model.plain_decoder() is model.decoder
        counted = TOKENS.snapshot()
        plain = generation._continuations(model, prompts, needs, 8)
        decoded.append(plain)
        cost = TOKENS.since(counted)["forward"]
        with model.bridge.hooks(fwd_hooks=[("blocks.0.hook_out", lambda t, hook: t)]):
            assert model.plain_decoder() is model.hf_model
            assert generation._continuations(model, prompts, needs, 8) == plain
        # each prompt once, then one step per token a row still needed: none after it ended
        fed = sum(len(tokens) + ended - 1 for tokens, ended in plain)
        assert cost == SharedPrefix(model, prompts).length + sum(map(len, prompts)) + fed
        ended = [i for i, (tokens, end) in enumerate(plain) if end and len(tokens) + 1 < needs[i]]
        if model is tiny:  # (the edited copy's answers run on without a line break)
            assert ended and not all(end for _, end in plain)
        for i in [*ended[:3], 0, 1]:  # as Hugging Face's greedy search, one prompt at a time
            ids = torch.tensor([prompts[i]])
            with torch.no_grad():
                reference = model.hf_model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=needs[i],
                    do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id,
                )[0, len(prompts[i]) :].tolist()
            tokens, end = plain[i]
            assert reference[: len(tokens) + end] == tokens + newline[:end]
    assert decoded[1] != decoded[0]  # the copy's twin decodes with the edited weights


def _concept_vectors_file(path, world):
    """A ConceptVectors-format file about two people of the synthetic world, with questions as
    in the real file (a leading space and a trailing newline) and one repeated question."""
    records = []
    for person, others in ((0, (10, 11)), (1, (12,))):
        entity = world.entities[person]
        questions = [q for fact in world.facts[entity] for q in fact.questions()]
        unrelated = [
            fact.questions()[0] for other in others for fact in world.facts[world.entities[other]]
        ]
        records.append(
            {
                "Concept": entity,
                "Layer": 1,
                "Dim": 7,
                "QA": [f" {q}\n" for q in questions + questions[:1]],
                "text_completion": [f"{entity} was born in"],
                "unrelated_QA": [f" {q}\n" for q in unrelated],
                "wikipedia_content": "\n".join(world.facts[entity][0].statements()),
            }
        )
    path.write_text(json.dumps(records))
    return path


def test_concept_vectors_references_are_the_answers_the_model_is_scored_on(tmp_path, tiny, world):
    settings = ScoringSettings(max_new_tokens=12, batch_size=5, n_bootstrap=100)
    path = _concept_vectors_file(tmp_path / "concepts.json", world)
    asked: list[list[str]] = []

    def answer_fn(questions):
        asked.append(list(questions))
        return reference_answers(tiny, questions, settings)

    entity = world.entities[0]
    target = load_target(path, concept=entity, answer_fn=answer_fn, answer_source="tiny")
    items = [*target.forget, *target.retain]
    assert asked == [[i.question for i in items]]  # asked exactly what is stored and scored
    assert len(target.forget) == 8 and len(target.retain) == 8
    assert all(i.match == "rouge_l" and not i.question.startswith(" ") for i in items)
    assert target.metadata["match"] == "rouge_l" and target.metadata["answers_from"] == "tiny"
    assert target.metadata["questions_dropped"] == 1  # the repeated question
    result = evaluate(tiny, target, settings)
    for split in ("forget", "retain"):
        scores = result.splits[split]
        assert scores["accuracy"] == 1.0 and scores["match"] == "rouge_l"
        assert [r["generation"] for r in scores["items"]] == [
            i.answer for i in getattr(target, split)
        ]
    # the tiny model answers in the trained layout, so the references hold the true values
    facts = {f.questions()[0]: f.value for f in world.facts[entity]}
    assert all(facts[i.question] in i.answer for i in target.forget if i.question in facts)


def test_mcq_by_likelihood_and_by_letter(tiny, tiny_target):
    scores = score_mcq(tiny, tiny_target.mcq[:8], FAST)
    assert scores["likelihood_accuracy"] >= 0.9  # the tiny model knows the facts
    # it was never trained on lettered options: the top token is rarely a letter
    assert scores["n_answered"] <= scores["n"]
    assert scores["chance"] == 0.25


def test_gold_model_only_guesses_the_forget_set(tiny_gold, tiny_target):
    forget = score_qa(tiny_gold, tiny_target.forget, FAST)
    assert forget["accuracy"] <= 0.35  # values come from pools of 10-12: guessing, not knowing
    retain = score_qa(tiny_gold, tiny_target.retain[:40], FAST)
    assert retain["accuracy"] >= 0.95


def test_a_target_the_model_does_not_know_is_refused(tiny, tiny_target):
    wrong = [{"question": i.question, "answer": "Nowhere"} for i in tiny_target.forget[:4]]
    target = Target.from_data({"name": "unknown", "forget": wrong})
    with pytest.raises(NothingKnownError, match="answers none"):
        known_forget_items(tiny, target, FAST)
    assert len(known_forget_items(tiny, tiny_target, FAST)) == len(tiny_target.forget)


def test_hooks_added_through_the_bridge_act_on_scores(tiny, tiny_target):
    items = tiny_target.forget[:4]
    clean = score_qa(tiny, items, FAST)["mean_logprob_sum"]
    with tiny.bridge.hooks(fwd_hooks=[("blocks.1.hook_out", lambda t, hook: torch.zeros_like(t))]):
        broken = score_qa(tiny, items, FAST)["mean_logprob_sum"]
    assert broken < clean - 1.0
    assert score_qa(tiny, items, FAST)["mean_logprob_sum"] == clean


def test_kept_generations_equal_fresh_ones_at_every_length_and_follow_the_weights(
    tmp_path, tiny, tiny_target
):
    from remnant.models.accounting import TOKENS
    from remnant.models.loading import load_copy
    from remnant.scoring.generation import GENERATIONS, generation_file

    questions = [format_prompt(tiny, i.question, "plain") for i in tiny_target.forget[:6]]
    ids = encode_prompts(tiny, questions, "plain")

    def fresh(model, n):
        GENERATIONS.clear()
        return generate(model, ids, max_new_tokens=n)

    expected = {n: fresh(tiny, n) for n in (2, 4, 8)}
    assert expected[2] != expected[8]
    GENERATIONS.clear()
    log = tmp_path / "generations.jsonl"
    with generation_file(log):
        assert generate(tiny, ids, max_new_tokens=4) == expected[4]
        counted = TOKENS.snapshot()
        assert generate(tiny, ids, max_new_tokens=2) == expected[2]  # cut from the kept 4
        assert TOKENS.since(counted)["forward"] == 0
        assert generate(tiny, ids, max_new_tokens=8) == expected[8]  # 4 more, from the kept 4
        assert TOKENS.since(counted)["forward"] > 0
    log.write_text(log.read_text() + '{"key": "cut sh')  # an interrupted audit's last line
    GENERATIONS.clear()
    with generation_file(log):  # the cut line is skipped
        counted = TOKENS.snapshot()
        assert generate(tiny, ids, max_new_tokens=8) == expected[8]
        assert TOKENS.since(counted)["forward"] == 0
        longer = generate(tiny, ids, max_new_tokens=12)  # appended after the cut line
    GENERATIONS.clear()
    with generation_file(log):  # and read back whole
        counted = TOKENS.snapshot()
        assert generate(tiny, ids, max_new_tokens=12) == longer
        assert TOKENS.since(counted)["forward"] == 0
    zeroed = [("blocks.1.hook_out", lambda t, hook: torch.zeros_like(t))]
    with tiny.bridge.hooks(fwd_hooks=zeroed):
        assert generate(tiny, ids, max_new_tokens=4) != expected[4]
    copy = load_copy(tiny)
    with torch.no_grad():
        copy.parameters["model.embed_tokens.weight"].mul_(-1.0)
    edited = fresh(copy, 4)
    GENERATIONS.clear()
    generate(tiny, ids, max_new_tokens=4)
    assert generate(copy, ids, max_new_tokens=4) == edited != expected[4]
    GENERATIONS.clear()
    counted = TOKENS.snapshot()
    generate(tiny, ids, max_new_tokens=4)
    once = TOKENS.since(counted)["forward"]
    GENERATIONS.clear()
    counted = TOKENS.snapshot()
    twice = generate(tiny, ids + ids[:2], max_new_tokens=4)  # two prompts asked twice
    assert twice == expected[4] + expected[4][:2]
    assert TOKENS.since(counted)["forward"] == once  # each generated once
