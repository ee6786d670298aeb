"""Reference unlearning methods on the tiny synthetic model: each forgets, keeps the retain set,
writes a checkpoint that reloads, and optimises the loss its paper defines."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from remnant.errors import OutputExistsError
from remnant.models import Subject, load_subject
from remnant.targets import Target
from remnant.unlearning import (
    REPORT_FILE,
    GAConfig,
    GradDiffConfig,
    NPOConfig,
    RetrainUnavailableError,
    RMUConfig,
    UnlearningError,
    run_unlearning,
    unlearn,
)
from remnant.unlearning.data import build_examples, collate
from remnant.unlearning.train import make_objective


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices are too small to gain from a second thread, and on a shared CPU
    two threads are several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "rmu", "retrain"])
def test_method_forgets_and_keeps_retain(method: str, tiny: Subject, tiny_target: Target) -> None:
    source_hash = tiny.content_hash
    unlearned, report = unlearn(tiny, tiny_target, method)
    before, after = report["before"], report["after"]
    assert before["forget"]["accuracy"] >= 0.9
    assert after["forget"]["accuracy"] <= before["forget"]["accuracy"] / 2
    assert after["retain"]["accuracy"] >= before["retain"]["accuracy"] - 0.15
    assert report["method"] == method
    assert report["retain_scored_on_training_items"] == (method in ("graddiff", "npo", "rmu"))
    assert report["source_model"]["content_hash"] == source_hash
    assert unlearned.content_hash == report["unlearned_content_hash"] != source_hash
    tiny.weights_changed()  # recompute, do not trust the cache
    assert tiny.content_hash == source_hash, "the caller's Subject must not change"


def test_checkpoint_reloads_with_identical_logits(tmp_path, tiny_target: Target) -> None:
    settings = {"steps": 3, "lora_rank": 2, "layers": (2, 3)}
    out = tmp_path / "npo"
    report = run_unlearning("tiny-synthetic", tiny_target, "npo", out, **settings)
    again, rerun = unlearn("tiny-synthetic", tiny_target, "npo", **settings)
    assert rerun["training"]["forget_term"] == report["training"]["forget_term"], "same seed"
    reloaded = load_subject(str(out))
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        assert torch.equal(reloaded.hf_model(ids).logits, again.hf_model(ids).logits)
    assert reloaded.content_hash == report["unlearned_content_hash"]
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["hyperparameters"]["lora_rank"] == 2 and saved["seed"] == 0
    assert set(saved["before"]) == {"forget", "retain", "seconds"}
    # LoRA was merged and removed: the hooked module tree is intact
    _, cache = again.bridge.run_with_cache(ids, names_filter=["blocks.3.mlp.hook_out"])
    assert cache["blocks.3.mlp.hook_out"].shape == (1, 5, again.d_model)
    assert not any("lora" in name for name, _ in again.hf_model.named_modules())
    assert not hasattr(again.hf_model, "peft_config")


def test_existing_output_is_refused(tmp_path, tiny_target: Target) -> None:
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_unlearning("tiny-synthetic", tiny_target, "ga", tmp_path)


def test_bad_requests_say_what_to_fix(tiny: Subject, tiny_target: Target) -> None:
    with pytest.raises(UnlearningError, match="choose one of"):
        unlearn(tiny, tiny_target, "forget-harder")
    with pytest.raises(UnlearningError, match="no hyperparameter beta"):
        unlearn(tiny, tiny_target, "ga", beta=0.5)
    with pytest.raises(UnlearningError, match="RMU trains layers up to"):
        RMUConfig(layer=1, layers=(2,))
    other = tiny_target.model_copy(update={"forget": tiny_target.forget[:4]})
    with pytest.raises(RetrainUnavailableError, match="asks to forget something else"):
        unlearn(tiny, other, "retrain")


# ---------------------------------------------------------------- losses by hand


@pytest.fixture(scope="module")
def fresh() -> Subject:
    """A tiny model these tests may perturb."""
    return load_subject("tiny-synthetic")


@pytest.fixture(scope="module")
def examples(fresh: Subject, tiny_target: Target):
    return build_examples(fresh, tiny_target, "plain", passages=True)


def _batch(subject: Subject, examples, index):
    return collate(examples, index, subject.tokenizer.pad_token_id, subject.device)


def _logprob_by_hand(subject: Subject, ids: tuple[int, ...], start: int) -> list[float]:
    """log p of each scored token, one unpadded sequence at a time."""
    with torch.no_grad():
        logits = subject.hf_model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[t - 1, ids[t]].item() for t in range(start, len(ids))]


def _nll_by_hand(subject: Subject, rows) -> float:
    """Mean over examples of each example's mean NLL per scored token."""
    per_example = [_logprob_by_hand(subject, row.ids, row.start) for row in rows]
    return sum(-sum(lps) / len(lps) for lps in per_example) / len(per_example)


def test_ga_and_graddiff_losses(fresh: Subject, examples) -> None:
    forget, retain = examples
    f_index, r_index = [0, 5, len(forget) - 1], [2, len(retain) - 1]
    f, r = _batch(fresh, forget, f_index), _batch(fresh, retain, r_index)
    forget_nll = _nll_by_hand(fresh, [forget[i] for i in f_index])
    retain_nll = _nll_by_hand(fresh, [retain[i] for i in r_index])
    generator = torch.Generator().manual_seed(0)
    ga, _ = make_objective(fresh, GAConfig(), forget, retain, generator)
    with torch.no_grad():
        loss, forget_term, _ = ga(f, None)
    assert loss.item() == pytest.approx(-forget_nll, rel=1e-5)
    assert forget_term == pytest.approx(forget_nll, rel=1e-5)
    graddiff, _ = make_objective(
        fresh, GradDiffConfig(retain_weight=0.7), forget, retain, generator
    )
    with torch.no_grad():
        loss, _, retain_term = graddiff(f, r)
    assert loss.item() == pytest.approx(-forget_nll + 0.7 * retain_nll, rel=1e-5)
    assert retain_term == pytest.approx(retain_nll, rel=1e-5)


def test_npo_loss(fresh: Subject, examples) -> None:
    forget, retain = examples
    index = [1, 7, len(forget) - 2]
    reference = [sum(_logprob_by_hand(fresh, forget[i].ids, forget[i].start)) for i in index]
    config = NPOConfig(beta=0.5)
    npo, uses_retain = make_objective(fresh, config, forget, retain, torch.Generator())
    assert not uses_retain
    original = {k: v.clone() for k, v in fresh.state_dict().items()}
    try:
        with torch.no_grad():
            _perturb(fresh)
            loss, _, _ = npo(_batch(fresh, forget, index), None)
        policy = [sum(_logprob_by_hand(fresh, forget[i].ids, forget[i].start)) for i in index]
    finally:
        with torch.no_grad():
            for name, tensor in fresh.parameters.items():
                tensor.copy_(original[name])
    ratios = torch.tensor(policy) - torch.tensor(reference)
    assert ratios.abs().min() > 0.01, "the perturbation must move the log-ratio"
    by_hand = -(2 / 0.5) * torch.log(torch.sigmoid(-0.5 * ratios)).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_rmu_loss(fresh: Subject, examples) -> None:
    forget, retain = examples
    config = RMUConfig(layer=2, steering_coeff=5.0, alpha=3.0)
    rmu, _ = make_objective(fresh, config, forget, retain, torch.Generator().manual_seed(0))
    u = torch.rand(fresh.d_model, generator=torch.Generator().manual_seed(0))
    control = 5.0 * u / u.norm()
    original = {k: v.clone() for k, v in fresh.state_dict().items()}
    f_index, r_index = [0, len(forget) - 1], [3, len(retain) - 1]
    assert forget[0].own == 3, "a QA item's own text starts after 'Question:'"
    frozen = [_hidden(fresh, retain[i].ids, 3) for i in r_index]
    try:
        with torch.no_grad():
            _perturb(fresh)
            loss, forget_term, retain_term = rmu(
                _batch(fresh, forget, f_index), _batch(fresh, retain, r_index)
            )
        forget_h = [_hidden(fresh, forget[i].ids, 3)[forget[i].own :] for i in f_index]
        retain_h = [_hidden(fresh, retain[i].ids, 3) for i in r_index]
    finally:
        with torch.no_grad():
            for name, tensor in fresh.parameters.items():
                tensor.copy_(original[name])
    forget_mse = sum(F.mse_loss(h, control.expand_as(h)) for h in forget_h) / len(forget_h)
    retain_mse = sum(F.mse_loss(h, h0) for h, h0 in zip(retain_h, frozen)) / len(frozen)
    assert retain_mse > 0, "the perturbation must move the retain activations"
    assert forget_term == pytest.approx(forget_mse.item(), rel=1e-5)
    assert retain_term == pytest.approx(retain_mse.item(), rel=1e-4)
    assert loss.item() == pytest.approx(forget_mse.item() + 3.0 * retain_mse.item(), rel=1e-5)


def _hidden(subject: Subject, ids: tuple[int, ...], index: int) -> torch.Tensor:
    """Hugging Face ``hidden_states[index]`` (the output of layer index-1), one sequence."""
    with torch.no_grad():
        return subject.hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states[
            index
        ][0]


def _perturb(subject: Subject) -> None:
    """Move the weights away from the reference (seeded noise on every MLP down-projection)."""
    generator = torch.Generator().manual_seed(1)
    for i in range(subject.n_layers):
        weight = subject.parameters[f"model.layers.{i}.mlp.down_proj.weight"]
        weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
