"""Prompt styles: the completion style (the question is the prompt) against hand-built token ids,
and misspelt styles refused everywhere."""

from __future__ import annotations

import pytest
import torch

from remnant.errors import SettingsError
from remnant.scoring import (
    ScoringSettings,
    adds_special_tokens,
    answer_prefix,
    encode_answers,
    encode_prompts,
    format_prompt,
    generate,
    resolve_style,
    score_qa,
    sequence_logprobs,
)
from remnant.settings import ContextSettings
from remnant.targets import QAItem

COMPLETION = ScoringSettings(prompt_style="completion", max_new_tokens=8, batch_size=8)


def _cloze_items(world, n_entities: int = 6) -> list[QAItem]:
    """Statements of the synthetic world cut before their value: "X was born in" -> "Varnholm"."""
    items = []
    for entity in world.entities[:n_entities]:
        for fact in world.facts[entity]:
            statement = fact.statements()[0]
            question = statement[: statement.index(fact.value)]
            items.append(QAItem(question=question, answer=fact.value, subject=entity))
    return items


def test_completion_prompts_are_the_question_with_special_tokens_as_in_plain(tiny, world):
    question = _cloze_items(world)[0].question
    assert not question.endswith(" ")  # stripped on load: the answer brings its own space
    assert format_prompt(tiny, question, "completion") == question
    assert resolve_style(tiny, "completion") == "completion"
    assert adds_special_tokens("completion") and adds_special_tokens("plain")
    assert not adds_special_tokens("chat")
    (ids,) = encode_prompts(tiny, [question], "completion")
    assert ids == tiny.tokenizer(question).input_ids
    assert ids[0] == tiny.tokenizer.bos_token_id  # special tokens added, as in plain
    (plain,) = encode_prompts(tiny, [format_prompt(tiny, question, "plain")], "plain")
    assert plain[0] == ids[0] and plain != ids
    assert answer_prefix("completion") == answer_prefix("plain") == " "
    assert encode_answers(tiny, ["Varnholm"], "completion") == encode_answers(
        tiny, ["Varnholm"], "plain"
    )


def test_score_qa_in_completion_style_scores_the_verbatim_text(tiny, world):
    items = _cloze_items(world)
    scored = score_qa(tiny, items, COMPLETION)
    assert scored["n"] == len(items) and scored["match"] == "alias"
    assert scored["accuracy"] >= 0.9  # the tiny model was trained on these statements
    prompts = [tiny.tokenizer(i.question).input_ids for i in items]
    answers = [tiny.tokenizer(" " + i.answer, add_special_tokens=False).input_ids for i in items]
    by_batching = sequence_logprobs(tiny, prompts, answers, batch_size=1)
    texts = generate(tiny, prompts, max_new_tokens=8, batch_size=1)
    for item, row, prompt, answer, lp, text in zip(
        items, scored["items"], prompts, answers, by_batching, texts
    ):
        full = tiny.tokenizer(item.question + " " + item.answer).input_ids
        assert full == prompt + answer  # the answer's tokens are those of the verbatim text
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny.hf_model(torch.tensor([full])).logits[0], dim=-1)
        by_hand = sum(logprobs[len(prompt) - 1 + k, token].item() for k, token in enumerate(answer))
        assert row["logprob_sum"] == pytest.approx(by_hand, abs=1e-4)
        assert row["logprob_sum"] == pytest.approx(float(lp.sum()), abs=1e-5)
        assert row["n_answer_tokens"] == len(answer)
        assert row["generation"] == text


@pytest.mark.parametrize("settings_class", [ScoringSettings, ContextSettings])
def test_misspelt_prompt_styles_are_refused(tiny, settings_class):
    with pytest.raises(SettingsError, match="prompt_style"):
        settings_class(prompt_style="Chat")
    with pytest.raises(SettingsError, match="prompt style"):
        resolve_style(tiny, "Chat")
    for function in (adds_special_tokens, answer_prefix):
        with pytest.raises(SettingsError, match="resolve_style"):
            function("auto")
    with pytest.raises(SettingsError, match="resolved"):
        format_prompt(tiny, "Q?", "Plain")
    with pytest.raises(SettingsError, match="resolved"):
        encode_prompts(tiny, ["Q?"], "auto")
