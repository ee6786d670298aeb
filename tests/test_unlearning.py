"""Reference unlearning methods on the tiny synthetic model: each forgets, keeps the retain set,
writes a checkpoint that reloads, and optimises the loss its paper defines."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from remnant.cli import app
from remnant.errors import (
    OutputExistsError,
    RetrainUnavailableError,
    SettingsError,
    UnlearningError,
)
from remnant.models import Model, load_model
from remnant.scoring import ScoringSettings, score_qa
from remnant.targets import Target
from remnant.unlearning import (
    REPORT_FILE,
    GAConfig,
    GradDiffConfig,
    NPOConfig,
    RMUConfig,
    UnlearningResult,
    UnlearningSettings,
    unlearn,
)
from remnant.unlearning.data import build_examples, collate, split_retain
from remnant.unlearning.train import make_objective

pytestmark = pytest.mark.usefixtures("one_thread")


def _unlearn(model, target, method, out, stop_rule=True, **overrides) -> UnlearningResult:
    settings = UnlearningSettings(method=method, overrides=overrides, stop_rule=stop_rule)
    return unlearn.run(model, target, settings, out=out)


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "rmu", "retrain"])
def test_method_forgets_and_keeps_retain(
    method: str, tiny: Model, tiny_target: Target, tmp_path
) -> None:
    source_hash = tiny.content_hash
    out = tmp_path / method
    result = _unlearn(tiny, tiny_target, method, out)
    before, after = result.before, result.after
    assert before["forget"]["accuracy"] >= 0.9
    assert after["forget"]["accuracy"] <= before["forget"]["accuracy"] / 2
    forget_drop = before["forget"]["accuracy"] - after["forget"]["accuracy"]
    retain_drop = before["retain"]["accuracy"] - after["retain"]["accuracy"]
    if method == "ga":
        # no retain term: GA pays in retain accuracy (0.18 at forget 0.5 on one machine's build
        # of the tiny model, at any learning rate tried), but far less than it takes from forget
        assert retain_drop <= forget_drop / 2
    else:
        assert retain_drop <= 0.15
    assert result.method == method
    split = result.retain_split
    assert after["retain"]["n"] == before["retain"]["n"] == split["n_held_out"] > 0
    assert result.retain_scored_on.startswith("held-out retain items")
    unlearned = load_model(str(out))  # the written checkpoint
    if method != "retrain":
        rule = result.training["stop_rule"]
        assert rule["fired"] and result.training["steps"] < result.training["max_steps"]
        assert rule["checks"][-1]["forget_accuracy"] == after["forget"]["accuracy"], "same scorer"
        # "forget after" reuses that last check: it must be what the written checkpoint scores
        rescored = score_qa(unlearned, tiny_target.forget, ScoringSettings())
        assert rescored["accuracy"] == after["forget"]["accuracy"]
        assert rescored["mean_logprob_sum"] == after["forget"]["mean_logprob_sum"]
    assert result.source_model["content_hash"] == source_hash
    assert unlearned.content_hash == result.output_content_hash != source_hash
    assert result.output == str(out)
    assert UnlearningResult.load(out / REPORT_FILE) == result
    assert result.summary() == {
        "forget": {"before": before["forget"]["accuracy"], "after": after["forget"]["accuracy"]},
        "retain": {"before": before["retain"]["accuracy"], "after": after["retain"]["accuracy"]},
        "steps": None if method == "retrain" else result.training["steps"],
    }
    tiny.weights_changed()  # recompute, do not trust the cache
    assert tiny.content_hash == source_hash, "the caller's Model must not change"


def test_stop_rule_ends_a_large_budget_once_forget_accuracy_halves(
    tiny: Model, tiny_target: Target, tmp_path
) -> None:
    result = _unlearn(tiny, tiny_target, "rmu", tmp_path / "rmu", epochs=200.0)
    training, rule = result.training, result.training["stop_rule"]
    n, batch = training["n_forget_examples"], result.hyperparameters["batch_size"]
    assert training["max_steps"] == math.ceil(200 * n / batch)
    assert rule["fired"] and training["steps"] == rule["fired_at_step"] < training["max_steps"] / 4
    checks, per_epoch = rule["checks"], math.ceil(n / batch)
    assert [c["step"] for c in checks] == [per_epoch * (k + 1) for k in range(len(checks))]
    before = result.before["forget"]["accuracy"]
    assert rule["forget_accuracy_before"] == before and rule["check_every_steps"] == per_epoch
    assert checks[-1]["forget_accuracy"] <= before / 2
    assert all(c["forget_accuracy"] > before / 2 for c in checks[:-1])
    assert len(training["forget_term"]) == training["steps"]
    assert training["epochs"] == round(training["steps"] * batch / n, 2)


def test_without_stop_rule_the_whole_budget_runs(
    tiny: Model, tiny_target: Target, tmp_path
) -> None:
    # 30 forget examples (24 QA items, 6 passages): ceil(1.5 · 30 / 7) = 7 steps
    result = _unlearn(
        tiny, tiny_target, "graddiff", tmp_path / "gd", epochs=1.5, batch_size=7, stop_fraction=None
    )
    training = result.training
    assert training["n_forget_examples"] == 30
    assert training["max_steps"] == training["steps"] == len(training["forget_term"]) == 7
    assert training["stop_rule"] is None and training["epochs"] == round(7 * 7 / 30, 2)
    result = _unlearn(tiny, tiny_target, "ga", tmp_path / "ga", False, steps=3, epochs=100.0)
    assert result.training["max_steps"] == result.training["steps"] == 3
    assert result.training["stop_rule"] is None and result.hyperparameters["stop_fraction"] is None


def test_step_budget_from_epochs() -> None:
    config = GAConfig(epochs=2.5, batch_size=8)
    assert config.max_steps(27) == 9 and config.steps_per_epoch(27) == 4  # ceil(67.5 / 8)
    assert GAConfig(epochs=2.5, batch_size=8, steps=4).max_steps(27) == 4
    assert GAConfig(epochs=0.1, batch_size=3).max_steps(30) == 1  # not 2 by float noise
    assert GAConfig(epochs=0.01, batch_size=32).max_steps(10) == 1
    for bad in ({"epochs": 0}, {"stop_fraction": 1.0}, {"stop_fraction": 0}, {"steps": 0}):
        with pytest.raises(UnlearningError):
            GAConfig(**bad)
    for holdout in (0.0, 1.0):
        with pytest.raises(UnlearningError, match="retain_holdout"):
            GAConfig(retain_holdout=holdout)


def test_retain_items_scored_are_held_out_of_training(
    tiny: Model, tiny_target: Target, monkeypatch, tmp_path
) -> None:
    """What the retain term trains on and what "retain before/after" scores, as actually passed
    to the example builder and the scorer, are disjoint and together all retain items."""
    trained_on: list[list[str]] = []
    scored_on: list[list[str]] = []
    split_scores = unlearn.split_scores

    def spy_build(model, target, style, passages, retain_items=None):
        trained_on.append([i.question for i in retain_items])
        return build_examples(model, target, style, passages, retain_items)

    def spy_split_scores(model, target, settings, *, retain_items=None, **kwargs):
        scored_on.append([i.question for i in retain_items])
        return split_scores(model, target, settings, retain_items=retain_items, **kwargs)

    monkeypatch.setattr(unlearn, "build_examples", spy_build)
    monkeypatch.setattr(unlearn, "split_scores", spy_split_scores)
    result = _unlearn(
        tiny, tiny_target, "graddiff", tmp_path / "gd", steps=1, seed=3, retain_holdout=0.25
    )
    (trained,) = trained_on
    assert len(scored_on) == 2 and scored_on[0] == scored_on[1], "before and after: same items"
    held_out, every = set(scored_on[0]), [i.question for i in tiny_target.retain]
    assert not held_out & set(trained) and held_out | set(trained) == set(every)
    split = result.retain_split
    assert split["n_held_out"] == round(0.25 * len(every)) == len(held_out)
    assert [every[i] for i in split["held_out"]] == scored_on[0]
    assert [every[i] for i in split["trained"]] == trained
    assert result.training["n_retain_examples"] == len(trained) + len(
        tiny_target.unrelated_passages
    )
    # the unrelated passages state every fact of the first 6 retain people (retain items 0..23)
    stated = sum(1 for i in split["held_out"] if i < 24)
    assert split["n_held_out_stated_in_passages"] == stated > 0
    assert f"{stated} of them stated in the unrelated passages" in result.retain_scored_on
    assert split_retain(len(every), 0.25, 3) == (split["trained"], split["held_out"])
    assert split_retain(len(every), 0.25, 4) != split_retain(len(every), 0.25, 3)
    assert split_retain(1, 0.5, 0) == ([], [0]) and split_retain(2, 0.9, 0)[0] != []


def test_cli_unlearn_budget_options(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "ga"
    args = ["unlearn", "-m", "tiny-synthetic", "-t", "tiny-synthetic", "--method", "ga"]
    result = runner.invoke(
        app, [*args, "-o", str(out), "--steps", "2", "--no-stop", "--retain-holdout", "0.25"]
    )
    assert result.exit_code == 0, result.output
    assert "2 of at most 2 steps" in result.output and "no stop rule" in result.output
    assert "held-out retain items (n=42 of 168" in result.output
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["hyperparameters"]["stop_fraction"] is None
    assert saved["hyperparameters"]["retain_holdout"] == 0.25
    result = runner.invoke(
        app, [*args, "-o", str(tmp_path / "x"), "--stop-fraction", "0.3", "--no-stop"]
    )
    assert result.exit_code == 2 and "not both" in result.output


def test_checkpoint_reloads_with_identical_logits(
    tmp_path, tiny: Model, tiny_target: Target, monkeypatch
) -> None:
    overrides = {"steps": 3, "lora_rank": 2, "layers": "2, 3"}  # layers as typed on a command line
    result = _unlearn("tiny-synthetic", tiny_target, "npo", tmp_path / "spec", **overrides)
    trained: list[Model] = []  # the copy of ``tiny`` that the second run trains
    load_copy = unlearn.load_copy

    def spy_copy(model):
        trained.append(load_copy(model))
        return trained[-1]

    monkeypatch.setattr(unlearn, "load_copy", spy_copy)
    out = tmp_path / "model"
    rerun = _unlearn(tiny, tiny_target, "npo", out, **overrides)
    assert rerun.training["forget_term"] == result.training["forget_term"], "same seed"
    assert rerun.output_content_hash == result.output_content_hash
    (again,) = trained
    reloaded = load_model(str(out))
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        assert torch.equal(reloaded.hf_model(ids).logits, again.hf_model(ids).logits)
    assert reloaded.content_hash == rerun.output_content_hash == again.content_hash
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["kind"] == "unlearning" and saved["hyperparameters"]["layers"] == [2, 3]
    assert saved["hyperparameters"]["lora_rank"] == 2 and saved["seed"] == 0
    assert set(saved["before"]) == {"forget", "retain", "seconds"}
    # LoRA was merged and removed: the hooked module tree is intact
    _, cache = again.bridge.run_with_cache(ids, names_filter=["blocks.3.mlp.hook_out"])
    assert cache["blocks.3.mlp.hook_out"].shape == (1, 5, again.d_model)
    assert not any("lora" in name for name, _ in again.hf_model.named_modules())
    assert not hasattr(again.hf_model, "peft_config")


def test_existing_output_is_refused_before_any_work(
    tmp_path, tiny: Model, tiny_target: Target, monkeypatch
) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("loaded or copied a model before checking the output")

    monkeypatch.setattr(unlearn, "load_model", no_work)
    monkeypatch.setattr(unlearn, "load_copy", no_work)
    for model in ("tiny-synthetic", tiny):
        for method in ("ga", "retrain"):
            with pytest.raises(OutputExistsError, match="--overwrite"):
                _unlearn(model, tiny_target, method, tmp_path)


def test_bad_requests_say_what_to_fix(tiny: Model, tiny_target: Target, tmp_path) -> None:
    with pytest.raises(SettingsError, match="must be one of 'ga', 'graddiff'"):
        UnlearningSettings(method="forget-harder")
    with pytest.raises(SettingsError, match="no hyperparameter beta"):
        UnlearningSettings(method="ga", overrides={"beta": 0.5})
    with pytest.raises(SettingsError, match="not both"):
        UnlearningSettings(method="ga", overrides={"stop_fraction": 0.3}, stop_rule=False)
    with pytest.raises(SettingsError, match="needs a GAConfig"):
        UnlearningSettings(method="ga", config=NPOConfig())
    with pytest.raises(SettingsError, match="retrain has no hyperparameters"):
        UnlearningSettings(method="retrain", overrides={"lr": 1e-4})
    with pytest.raises(SettingsError, match="comma-separated integers"):
        UnlearningSettings(method="ga", overrides={"layers": "2,three"})
    with pytest.raises(UnlearningError, match="RMU trains layers up to"):
        RMUConfig(layer=1, layers=(2,))
    other = tiny_target.model_copy(update={"forget": tiny_target.forget[:4]})
    with pytest.raises(RetrainUnavailableError, match="asks to forget something else"):
        _unlearn(tiny, other, "retrain", tmp_path / "retrain")


# ---------------------------------------------------------------- losses by hand


@pytest.fixture(scope="module")
def fresh() -> Model:
    """A tiny model these tests may perturb."""
    return load_model("tiny-synthetic")


@pytest.fixture(scope="module")
def examples(fresh: Model, tiny_target: Target):
    return build_examples(fresh, tiny_target, "plain", passages=True)


def _batch(model: Model, examples, index):
    return collate(examples, index, model.tokenizer.pad_token_id, model.device)


def _logprob_by_hand(model: Model, ids: tuple[int, ...], start: int) -> list[float]:
    """log p of each scored token, one unpadded sequence at a time."""
    with torch.no_grad():
        logits = model.hf_model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[t - 1, ids[t]].item() for t in range(start, len(ids))]


def _nll_by_hand(model: Model, rows) -> float:
    """Mean over examples of each example's mean NLL per scored token."""
    per_example = [_logprob_by_hand(model, row.ids, row.start) for row in rows]
    return sum(-sum(lps) / len(lps) for lps in per_example) / len(per_example)


def test_ga_and_graddiff_losses(fresh: Model, examples) -> None:
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


def test_npo_loss(fresh: Model, examples) -> None:
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


def test_rmu_loss(fresh: Model, examples) -> None:
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


def _hidden(model: Model, ids: tuple[int, ...], index: int) -> torch.Tensor:
    """Hugging Face ``hidden_states[index]`` (the output of layer index-1), one sequence."""
    with torch.no_grad():
        return model.hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states[index][
            0
        ]


def _perturb(model: Model) -> None:
    """Move the weights away from the reference (seeded noise on every MLP down-projection)."""
    generator = torch.Generator().manual_seed(1)
    for i in range(model.n_layers):
        weight = model.parameters[f"model.layers.{i}.mlp.down_proj.weight"]
        weight.add_(0.1 * torch.randn(weight.shape, generator=generator))
