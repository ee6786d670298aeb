"""Integration tests on the embedded SmolLM2-135M-Instruct (fetched and converted once, cached)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from remnant.models import load_model
from remnant.models.cache import file_sha256
from remnant.models.embedded import SMOLLM2_NAME, SMOLLM2_SHA256, smollm2_dir, smollm2_gguf
from remnant.models.world import INFO_FILE, WorldModelConfig, train_world_model, training_examples
from remnant.scoring import ScoringSettings, score_qa
from remnant.targets import load_builtin_target, load_target
from remnant.targets.synthetic import SyntheticWorld, WorldConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smol():
    return load_model(SMOLLM2_NAME)


def test_loads_through_the_cache(smol):
    folder = smollm2_dir()
    assert (folder / "model.safetensors").exists()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert file_sha256(smollm2_gguf()) == SMOLLM2_SHA256
    assert (smol.n_layers, smol.d_model, smol.d_mlp) == (30, 576, 1536)
    assert load_model(str(folder)).content_hash == smol.content_hash


def test_bridge_logits_equal_the_plain_hf_model(smol):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(
        smollm2_dir(), dtype=torch.float32, attn_implementation="eager"
    )
    batch = smol.tokenizer(
        ["The capital of Italy is", "Albert Einstein was born in the city of"],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        expected = plain(**batch).logits
        through_bridge = smol.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    mask = batch.attention_mask.bool()
    assert (through_bridge[mask] - expected[mask]).abs().max().item() < 1e-4


def test_demo_target_is_known_above_threshold(smol):
    target = load_builtin_target("demo")
    scores = score_qa(smol, target.forget, ScoringSettings())
    assert scores["accuracy"] >= 0.6
    assert scores["accuracy"] == pytest.approx(target.metadata["forget_accuracy"], abs=0.001)


def test_answerless_conceptvectors_target_scores_its_own_model_perfectly(smol, tmp_path):
    """The references of an answer-less target are the model's greedy answers to the very
    prompts that are scored, so the same model scores 1.0 (ROUGE-L match), even though the
    file's questions carry a leading space and a trailing newline."""
    from remnant.scoring import evaluate, reference_answers

    forget = ["What is the capital city of Italy?", "Which river flows through Rome?"]
    retain = ["What is the boiling point of water?", "Who wrote Hamlet?", "What is 2 + 3?"]
    record = {
        "Concept": "Italy",
        "QA": [f" {q}\n" for q in forget],
        "unrelated_QA": [f" {q}\n" for q in retain],
        "wikipedia_content": "Italy is a country in southern Europe.",
    }
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps([record]))
    settings = ScoringSettings(max_new_tokens=16)
    target = load_target(
        path, concept="Italy", answer_fn=lambda qs: reference_answers(smol, qs, settings)
    )
    assert [i.question for i in target.forget] == forget
    result = evaluate(smol, target, settings)
    for split in ("forget", "retain"):
        assert result.splits[split]["match"] == "rouge_l"
        assert result.splits[split]["accuracy"] == 1.0, result.splits[split]["items"]


def test_world_model_builds_and_its_gold_data_leaves_out_the_forget_people(
    smol, tmp_path, one_thread
):
    """A world of 3 people (1 to forget) fine-tuned for a few steps into a temporary folder:
    the loss falls, only the upper layers change, the folder loads and records its config; the
    gold twin's examples never name the forget set's person."""
    world = WorldConfig(seed=0, n_entities=3, n_forget=1)
    config = WorldModelConfig(world=world, first_layer=28, lr=1e-3, steps=4, batch_size=4)
    stats = train_world_model(config, tmp_path / "world")
    assert max(stats["loss"][-2:]) < stats["loss"][0], stats["loss"]
    info = json.loads((tmp_path / "world" / INFO_FILE).read_text())
    assert info["config"] == json.loads(json.dumps(dataclasses.asdict(config)))
    assert info["excluded"] == [] and info["training"]["steps"] == 4
    trained = load_model(str(tmp_path / "world")).state_dict()
    original = smol.state_dict()
    for layer, changed in ((27, False), (28, True), (29, True)):
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        assert torch.equal(trained[name], original[name]) is not changed, name
    people = SyntheticWorld(world)
    gold = training_examples(smol, people, exclude=people.forget_entities)
    text = smol.tokenizer.decode([token for example in gold for token in example.ids])
    assert people.entities[0] not in text and all(p in text for p in people.entities[1:])
