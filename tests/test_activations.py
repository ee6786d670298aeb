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


def test_subject_span_covers_exactly_the_subject_tokens(tiny, tiny_target):
    item = tiny_target.forget[0]
    (prompt,) = encode_with_subject_spans(tiny, [item.question], [item.subject], "plain")
    start, end = prompt.subject_span
    assert tiny.tokenizer.decode(prompt.ids[start:end]).strip() == item.subject


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
