"""Activation extraction: equals the unbatched model's hidden states at the chosen positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from remnant.errors import RemnantError
from remnant.probes.activations import (
    encode_with_subject_spans,
    extract,
    extract_questions,
    hook_names,
)
from remnant.scoring import encode_prompts


def test_subject_span_covers_exactly_the_subject_tokens(tiny, tiny_target):
    item = tiny_target.forget[0]
    (prompt,) = encode_with_subject_spans(tiny, [item.question], [item.subject], "plain")
    start, end = prompt.subject_span
    assert tiny.tokenizer.decode(prompt.ids[start:end]).strip() == item.subject


def test_subject_span_in_completion_style_where_the_prompt_is_the_question(tiny, world):
    entity = world.entities[2]
    fact = world.facts[entity][0]
    statement = fact.statements()[0]  # "{entity} was born in {value}."
    texts = [statement[: statement.index(fact.value)].strip(), f"Ask {entity} about {entity}"]
    prompts = encode_with_subject_spans(tiny, texts, [entity, entity], "completion")
    for text, prompt in zip(texts, prompts):
        assert list(prompt.ids) == encode_prompts(tiny, [text], "completion")[0]
        assert prompt.ids[0] == tiny.tokenizer.bos_token_id  # special tokens as in plain
        start, end = prompt.subject_span
        assert tiny.tokenizer.decode(prompt.ids[start:end]).strip() == entity
    assert prompts[0].subject_span[0] == 1  # the subject opens the text, right after BOS
    assert prompts[1].subject_span[1] == len(prompts[1].ids)  # its last occurrence
    acts = extract_questions(
        tiny, texts, [entity, entity], position="subject_mean", prompt_style="completion"
    )
    for k, prompt in enumerate(prompts):
        with torch.no_grad():
            hidden = tiny.hf_model(torch.tensor([prompt.ids]), output_hidden_states=True)
        start, end = prompt.subject_span
        for layer in range(tiny.n_layers):
            expected = hidden.hidden_states[layer][0, start:end].mean(0).numpy()
            np.testing.assert_allclose(acts[k, layer], expected, atol=1e-5)


@pytest.mark.parametrize("position", ["last", "subject_last", "subject_mean"])
def test_batched_extraction_matches_single_forward(tiny, tiny_target, position):
    items = list(tiny_target.forget[:3]) + list(tiny_target.retain[:4])  # several lengths
    acts = extract_questions(
        tiny,
        [i.question for i in items],
        [i.subject for i in items],
        position=position,
        batch_size=3,
    )
    assert acts.shape == (len(items), tiny.n_layers + 1, tiny.d_model)
    prompts = encode_with_subject_spans(
        tiny, [i.question for i in items], [i.subject for i in items]
    )
    for k, prompt in enumerate(prompts):
        with torch.no_grad():
            hidden = tiny.hf_model(
                torch.tensor([prompt.ids]), output_hidden_states=True
            ).hidden_states
        start, end = prompt.subject_span
        cols = {
            "last": [len(prompt.ids) - 1],
            "subject_last": [end - 1],
            "subject_mean": list(range(start, end)),
        }[position]
        for layer in range(tiny.n_layers):  # HF's last hidden state is after the final norm
            expected = hidden[layer][0, cols].mean(0).numpy()
            np.testing.assert_allclose(acts[k, layer], expected, atol=1e-5)


def test_sites_and_errors(tiny, tiny_target):
    assert hook_names(tiny, "mlp", [0, 2]) == ["blocks.0.mlp.hook_out", "blocks.2.mlp.hook_out"]
    with pytest.raises(RemnantError, match="unknown activation site"):
        hook_names(tiny, "heads")
    (prompt,) = encode_with_subject_spans(tiny, ["What is two plus two?"], [None])
    with pytest.raises(RemnantError, match="subject span"):
        extract(tiny, [prompt], ["blocks.0.hook_out"], position="subject_last")
    mlp = extract(tiny, [prompt], hook_names(tiny, "mlp") + hook_names(tiny, "attn"))
    assert all(v.shape == (1, tiny.d_model) for v in mlp.values())
