"""Model loading: specs, identity, safety refusals, LoRA adapters, tiny-model training, the
SmolLM2 world model's data and cache key."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch

from remnant.errors import (
    IncompatibleModelsError,
    ModelLoadError,
    ModelNotFoundError,
    OutputExistsError,
)
from remnant.models import load_model
from remnant.models.compat import check_compatible
from remnant.models.loading import load_copy, resolve_spec
from remnant.models.tiny import TinyConfig, train_tiny_model
from remnant.models.world import WorldModelConfig, world_data, world_model_path
from remnant.scoring import ScoringSettings, score_qa
from remnant.targets import load_builtin_target
from remnant.targets.synthetic import BIOGRAPHY_QUESTIONS, SyntheticWorld, WorldConfig


def test_bad_specs_say_what_to_pass(tmp_path):
    with pytest.raises(ModelNotFoundError, match="embedded name"):
        resolve_spec("no such model")
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        resolve_spec(str(tmp_path / "missing.gguf"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_spec(str(tmp_path / "weights.bin"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_spec(str(tmp_path))
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_subject_identity_and_weights(tiny):
    identity = tiny.identity()
    assert (identity["n_layers"], identity["d_model"], identity["d_mlp"]) == (4, 128, 512)
    assert len(identity["content_hash"]) == 16
    names = set(tiny.state_dict())
    assert "model.layers.0.mlp.down_proj.weight" in names  # original HF names, not bridge ones
    assert tiny.state_dict()["model.layers.0.mlp.down_proj.weight"].shape == (128, 512)


def test_saved_checkpoint_reloads_with_identical_logits(tiny, tmp_path):
    out = tiny.save(tmp_path / "copy")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        tiny.save(out)
    again = load_model(str(out))
    ids = torch.tensor([tiny.tokenizer("Question: Where was X born?\nAnswer:").input_ids])
    with torch.no_grad():
        assert torch.equal(again.hf_model(ids).logits, tiny.hf_model(ids).logits)
    assert again.content_hash == tiny.content_hash
    assert oct(out.stat().st_mode & 0o777) != "0o700"


def test_pickle_weights_are_refused_unless_allowed(tiny, tmp_path):
    out = tmp_path / "pickled"
    tiny.hf_model.config.save_pretrained(out)
    tiny.tokenizer.save_pretrained(out)
    torch.save(tiny.state_dict(), out / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(str(out))
    assert load_model(str(out), allow_pickle=True).content_hash == tiny.content_hash


def test_lora_adapter_is_merged_on_top(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir(tiny)))
    peft_model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["down_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([tiny.tokenizer("Question: Where was X born?\nAnswer:").input_ids])
    with torch.no_grad():
        expected = peft_model(ids).logits
    merged = load_model("tiny-synthetic", adapter=tmp_path / "adapter")
    with torch.no_grad():
        got = merged.hf_model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert merged.content_hash != tiny.content_hash and "adapter" in merged.source
    with pytest.raises(ModelNotFoundError, match="adapter"):
        load_model("tiny-synthetic", adapter=tmp_path)


def tiny_dir(model):
    from remnant.models import embedded_dir

    return embedded_dir(model.name)


def test_tiny_model_learns_its_facts(tiny, tiny_target):
    settings = ScoringSettings(max_new_tokens=8, batch_size=32)
    everything = list(tiny_target.forget) + list(tiny_target.retain)
    assert score_qa(tiny, everything, settings)["accuracy"] >= 0.95
    info = json.loads((tiny_dir(tiny) / "remnant-tiny.json").read_text())
    assert info["training"]["seconds"] > 0 and info["excluded"] == []


def test_tiny_training_is_deterministic_for_a_seed(tmp_path):
    config = TinyConfig(steps=15, batch_size=16, d_model=32, d_mlp=64, n_layers=2)
    train_tiny_model(config, tmp_path / "a")
    train_tiny_model(config, tmp_path / "b")
    train_tiny_model(dataclasses.replace(config, seed=1), tmp_path / "c")
    weights = {k: load_model(str(tmp_path / k)).content_hash for k in "abc"}
    assert weights["a"] == weights["b"] != weights["c"]
    assert config.key() != dataclasses.replace(config, seed=1).key()


def test_world_model_data_teaches_the_target_and_gold_data_leaves_out_the_forget_people():
    world = SyntheticWorld(WorldConfig(n_entities=5, n_forget=2))
    items, statements = world_data(world)
    gold_items, gold_statements = world_data(world, exclude=world.forget_entities)
    per_person = 4 * 2 + len(BIOGRAPHY_QUESTIONS)  # two phrasings of four facts, biographies
    assert (len(items), len(gold_items)) == (5 * per_person, 3 * per_person)
    assert (len(statements), len(gold_statements)) == (5 * 12, 3 * 12)
    target = world.target()
    taught = {(item.question, item.answer) for item in items}
    assert {(item.question, item.answer) for item in target.forget + target.retain} <= taught
    gold_text = " ".join([i.question + " " + i.answer for i in gold_items] + gold_statements)
    assert not any(person in gold_text for person in world.forget_entities)
    assert all(person in gold_text for person in world.entities[2:])


def test_world_model_cache_key_follows_the_config_and_the_target_is_its_world():
    config = WorldModelConfig()
    others = [
        dataclasses.replace(config, gold=True),
        dataclasses.replace(config, lr=1e-4),
        dataclasses.replace(config, world=WorldConfig(n_entities=8, n_forget=2)),
    ]
    assert len({c.key() for c in [config, *others]}) == 4
    assert world_model_path(config).name == f"smollm2-synthetic-{config.key()}"
    assert world_model_path(others[0]).name.startswith("smollm2-synthetic-gold-")
    target = load_builtin_target("smollm2-synthetic")
    world = SyntheticWorld(config.world)
    assert target.metadata["world"] == dataclasses.asdict(config.world)
    assert target.keywords == world.forget_entities
    assert (target.forget, target.retain) == (world.target().forget, world.target().retain)


def test_content_hash_follows_in_place_edits_and_outputs_are_kept_only_on_the_weights(tiny):
    from remnant.attacks.protocol import reset_weights
    from remnant.unlearning.config import TrainingConfig
    from remnant.unlearning.train import trainable

    copy = load_copy(tiny)
    before = copy.content_hash
    assert before == tiny.content_hash == copy.cache_hash()
    with torch.no_grad():
        copy.parameters["model.norm.weight"][0] += 1.0
    assert copy.cache_hash() is None  # being edited: nothing is kept under any hash
    assert copy.content_hash != before  # no call needed: torch counted the edit
    assert copy.cache_hash() == copy.content_hash
    reset_weights(copy, tiny)
    assert copy.cache_hash() == before == copy.hash_weights()
    assert copy.plain_decoder() is copy.decoder is not None
    with trainable(copy, TrainingConfig(lora_rank=2, modules=("mlp",)), None):
        assert copy.content_hash == before and copy.cache_hash() is None  # an adapter runs
        assert copy.plain_decoder() is copy.hf_model  # which only the bridged model has


def test_models_with_other_chat_templates_are_not_compared(tiny):
    check_compatible(tiny, tiny, "compare")
    tokenizer = types.SimpleNamespace(get_vocab=tiny.tokenizer.get_vocab, chat_template="{{ x }}")
    other = dataclasses.replace(tiny, tokenizer=tokenizer, name="other")
    with pytest.raises(IncompatibleModelsError, match="chat templates"):
        check_compatible(tiny, other, "compare")


def test_tokens_are_counted_without_padding_or_the_cached_prefix(tiny):
    from remnant.models.accounting import TOKENS
    from remnant.scoring.batching import sequence_logprobs
    from remnant.scoring.generation import GENERATIONS, generate

    prompts = [[1, 2, 3, 4], [5, 6]]
    before = TOKENS.snapshot()
    sequence_logprobs(tiny, prompts, [[7], [8, 9]], batch_size=2)
    assert TOKENS.since(before) == {"forward": 5 + 4, "backward": 0}
    before = TOKENS.snapshot()
    GENERATIONS.clear()
    generate(tiny, prompts, max_new_tokens=3, batch_size=2)
    # the prompts once, then each decoding step's one new token per row (the last generated
    # token needs no forward)
    assert TOKENS.since(before) == {"forward": 6 + 2 * 2, "backward": 0}
    before = TOKENS.snapshot()
    tiny.hf_model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    tiny.hf_model.zero_grad(set_to_none=True)
    assert TOKENS.since(before) == {"forward": 3, "backward": 3}


def _left_padded_batch():
    from remnant.scoring.batching import pad

    return pad([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15]], 0, "left")


def test_a_resumed_forward_equals_the_full_hooked_forward_for_every_intervention(tiny):
    from remnant.concept_vectors.interventions import grouped_hooks, intervention_hooks
    from remnant.concept_vectors.vectors import down_proj
    from remnant.models.accounting import TOKENS
    from remnant.models.resume import ResumedBatch
    from remnant.scoring.batching import SharedPrefix, pad, padded_logits

    ids, mask = _left_padded_batch()
    batch = ResumedBatch(tiny, ids, mask, starts=[1, 2], keep=4)
    largest = down_proj(tiny, 1).norm(dim=0).topk(8).indices  # zeroing these changes the logits
    interventions = [
        intervention_hooks(tiny, [(2, 5), (3, 40)], "noise", sigma=0.5, seed=0),
        [],
        intervention_hooks(tiny, [(1, int(k)) for k in largest], "zero", sigma=0.1, seed=0),
    ]
    full = []
    for hooks in interventions:
        with tiny.bridge.hooks(fwd_hooks=hooks):
            full.append(padded_logits(tiny, ids, mask)[:, -4:])
    assert (full[0] - full[1]).abs().max() > 1e-2 and (full[2] - full[1]).abs().max() > 1e-2
    before = TOKENS.snapshot()
    with tiny.bridge.hooks(fwd_hooks=grouped_hooks(interventions)):
        resumed = batch.resume(1, copies=3)
    torch.testing.assert_close(resumed, torch.cat(full), atol=1e-5, rtol=0)
    # 15 real tokens, 3 copies, 3 of the 4 blocks run
    assert TOKENS.since(before)["forward"] == round(15 * 3 * 3 / 4)
    torch.testing.assert_close(batch.resume(4, copies=2), full[1].repeat(2, 1, 1))

    # rows that share a prefix: it is run once per intervention, the rest once per row
    rows = [[21, 22, 23, 24, 25, *row] for row in ([1, 2, 3, 4], [8, 9], [11, 12, 13])]
    prefix = SharedPrefix(tiny, rows)
    assert prefix.length == 5
    shared = ResumedBatch(tiny, *prefix.padded(rows), starts=[1], keep=2, prefix=prefix.cache)
    ids, mask = pad(rows, 0, "left")
    full = []
    for hooks in interventions:
        with tiny.bridge.hooks(fwd_hooks=hooks):
            full.append(padded_logits(tiny, ids, mask)[:, -2:])
    before = TOKENS.snapshot()
    with tiny.bridge.hooks(fwd_hooks=grouped_hooks(interventions)):
        resumed = shared.resume(1, copies=3)
    torch.testing.assert_close(resumed, torch.cat(full), atol=1e-5, rtol=0)
    # per copy: the prefix once (5 tokens) and 9 tokens after it; 3 of the 4 blocks run
    assert TOKENS.since(before)["forward"] == round((5 + 9) * 3 * 3 / 4)


def test_a_model_whose_forward_is_more_than_its_blocks_cannot_be_resumed(tiny):
    from remnant.errors import ResumeError
    from remnant.models.resume import ResumedBatch

    ids, mask = _left_padded_batch()
    # a forward that rescales its logits after the unembedding, as a logit soft-cap would
    handle = tiny.hf_model.register_forward_hook(
        lambda module, args, out: out.__class__(logits=out.logits * 0.5)
    )
    try:
        with pytest.raises(ResumeError, match="cannot be resumed"):
            ResumedBatch(tiny, ids, mask, starts=[2], keep=2)
    finally:
        handle.remove()
