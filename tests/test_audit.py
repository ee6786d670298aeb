"""The audit on the tiny model: verdicts, resumption, failures, configs."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_AUDIT

from remnant.audit import STAGES, ConfigError, audit, load_config
from remnant.audit.run import RESULTS_FILE
from remnant.audit.signals import SIGNALS, signals


def test_verdicts_gold_removed_unlearned_suppressed_original_not_unlearned(tiny_audit):
    _, results = tiny_audit
    verdicts = results["verdicts"]
    assert verdicts["gold"]["verdict"] == "removed"
    assert verdicts["ga"]["verdict"] == "suppressed"
    assert verdicts["same"]["verdict"] == "not unlearned"
    strongest = verdicts["ga"]["evidence"][0]
    assert strongest["fires"] and strongest["decisive"] and strongest["margin"] > 0
    relearned = [e for e in verdicts["ga"]["evidence"] if e["stage"] == "relearn-ga"]
    assert relearned and relearned[0]["fires"], "the GA model's facts come back by relearning"
    assert not any(e["fires"] and e["decisive"] for e in verdicts["gold"]["evidence"][:-1])
    # GA without a stop rule costs retain accuracy; the gold model was trained on it all
    assert verdicts["ga"]["collateral_damage"] and not verdicts["gold"]["collateral_damage"]


def test_the_score_is_the_largest_standardized_margin_and_its_sign_is_the_verdict(tiny_audit):
    from remnant.audit.verdict import MIN_SPREAD

    _, results = tiny_audit
    for name, judged in results["verdicts"].items():
        decisive = [e for e in judged["evidence"] if e["decisive"] and e["margin"] is not None]
        standardized = [e["margin"] / max(e["spread"], MIN_SPREAD) for e in decisive]
        assert judged["score"] == pytest.approx(max(standardized), abs=1e-6), name
        # the evidence is listed strongest first, as the score reads it
        assert standardized.index(max(standardized)) == 0 or not judged["evidence"][0]["decisive"]
        for line in judged["evidence"]:
            if line["margin"] is not None and line["margin"] > 0:
                assert line["fires"], line
        if judged["verdict"] == "removed":
            assert judged["score"] <= 0, name
        else:
            assert judged["score"] >= 0, name
    assert results["verdicts"]["ga"]["score"] > results["verdicts"]["gold"]["score"]


def test_signals_are_read_from_the_stages_that_ran(tiny_audit):
    _, results = tiny_audit
    read = {name: signals(results, name) for name in results["verdicts"]}
    assert set(read["ga"]) == set(SIGNALS)
    for name, values in read.items():
        assert values["verdict score"] == results["verdicts"][name]["score"]
        assert values["quantization"] is None and values["membership (AUROC)"] is None
        assert values["relearn (forget data)"] is not None and values["probe"] is not None
    # patching the gold model into the original against itself erases all it erases; the
    # original patched into itself erases nothing
    assert read["gold"]["UDS-style (1 - depth)"] == pytest.approx(0.0)
    assert read["same"]["UDS-style (1 - depth)"] == pytest.approx(1.0)
    assert read["ga"]["forget accuracy"] < read["same"]["forget accuracy"]
    assert read["ga"]["logit lens"] > read["gold"]["logit lens"]


def _lens_result(inner, output, control):
    """A lens Result over 12 items, three layers (the last is the output): the audited model's
    answer ranks ``inner`` at layer 1 and ``output`` at the output, its control answers
    ``control`` at layer 1 (each varied a little over items)."""
    from remnant.probes.lens import LensResult

    def item(k):
        return {
            "question": f"q{k}", "answer": f"a{k}", "context": "", "answer_token": f"a{k}",
            "control_tokens": ["b"], "original_rank": [60, 1, 1], "original_prob": [0, 1, 1],
            "original_control_rank": [60, 30, 30], "unlearned_rank": [60, inner + k % 3, output],
            "unlearned_prob": [0, 0, 0], "unlearned_control_rank": [60, control + k % 2, 900],
        }  # fmt: skip

    curves = {"median_rank": [60, 1, 1], "median_control_rank": [60, 30, 30],
              "mean_prob": [0, 1, 1], "top1": [0, 1, 1]}  # fmt: skip
    return LensResult(
        original={}, unlearned={}, target="t", settings={"n_bootstrap": 500, "seed": 0},
        layers=["0", "1", "2"], items=[item(k) for k in range(12)],
        by_layer={"original": curves, "unlearned": curves},
    )  # fmt: skip


def test_the_lens_line_fires_on_a_hidden_answer_not_on_a_hidden_kind_of_answer():
    from remnant.audit.verdict import _lens_line

    specific = _lens_line(_lens_result(inner=2, output=900, control=40), "lens-m")
    assert specific["fires"] and specific["margin"] > 0
    # the output collapsed, but inside the answer ranks like any other answer of its kind:
    # what a model that never saw the fact computes
    generic = _lens_line(_lens_result(inner=8, output=900, control=8), "lens-m")
    assert not generic["fires"] and generic["margin"] < 0
    # beside a gold model whose inner ranks single the answers out just as much, no line
    gold = _lens_result(inner=2, output=2, control=40)
    assert not _lens_line(_lens_result(inner=2, output=900, control=40), "lens-m", gold)["fires"]
    not_hidden = _lens_line(_lens_result(inner=2, output=2, control=40), "lens-m")
    assert not not_hidden["fires"]


def _behaviour(correct):
    """A behaviour Result stand-in: forget items scored ``correct`` (1/0 per item)."""
    from types import SimpleNamespace

    items = [{"correct": bool(c)} for c in correct]
    forget = {"items": items, "accuracy": sum(correct) / len(correct), "n": len(correct)}
    return SimpleNamespace(splits={"forget": forget}, settings={"n_bootstrap": 500, "seed": 0})


def test_answering_more_forget_questions_than_the_gold_model_is_decisive():
    from remnant.audit.verdict import judge

    original, gold = _behaviour([1] * 24), _behaviour([0] * 24)
    partly = _behaviour([1] * 8 + [0] * 16)  # below the original, well above the gold model
    results = {"behaviour-original": original, "behaviour-gold": gold, "behaviour-m": partly}
    judged = judge(results, "m", "gold")
    assert judged["verdict"] == "suppressed"
    assert judged["evidence"][0]["rule"] == "above gold" and judged["evidence"][0]["fires"]
    # one item more than the gold model is not enough; without a gold model there is no line
    results["behaviour-m"] = _behaviour([1] + [0] * 23)
    assert judge(results, "m", "gold")["verdict"] == "removed"
    results["behaviour-m"] = partly
    assert judge(results, "m")["verdict"] == "removed"
    assert not any(line["rule"] == "above gold" for line in judge(results, "m")["evidence"])
    # the gold model is not compared with itself
    assert judge(results, "gold", "gold")["verdict"] == "removed"


def test_every_evidence_line_names_a_stage_of_the_audit(tiny_audit):
    _, results = tiny_audit
    ids = {stage["id"] for stage in results["stages"]}
    for judged in results["verdicts"].values():
        for line in judged["evidence"] + judged["collateral"]:
            assert line["stage"] in ids, line


def test_inputs_are_recorded_and_models_left_unchanged(tiny_audit, tiny, tiny_ga, tiny_gold):
    out, results = tiny_audit
    inputs = results["inputs"]
    assert inputs["original"]["content_hash"] == tiny.content_hash
    assert [m["role"] for m in inputs["models"].values()] == ["unlearned", "unlearned", "gold"]
    for model in (tiny, tiny_ga, tiny_gold):
        recorded = model.content_hash
        model.weights_changed()  # hash the weights afresh
        assert model.content_hash == recorded
    assert json.loads((out / RESULTS_FILE).read_text()) == results
    assert (out / "timings.json").is_file() and (out / "audit.log").stat().st_size > 0
    tokens = json.loads((out / "timings.json").read_text())["tokens"]
    assert tokens["behaviour-ga"]["forward"] > 0
    # scoring pushes no tokens with gradients; relearning fine-tunes (forward and backward)
    assert tokens["behaviour-ga"]["backward"] == 0 and tokens["probes-ga"]["backward"] == 0
    assert tokens["relearn-ga"]["backward"] > 0
    for stage in results["stages"]:
        assert (out / "stages" / f"{stage['id']}.json").is_file()
        assert stage["status"] == "done", stage


def _stages(*names):
    return load_config(TINY_AUDIT).with_stages(list(names))


def test_interrupted_audit_resumes_to_the_same_results(
    tiny, tiny_ga, tiny_gold, tiny_target, tmp_path, monkeypatch
):
    config = _stages("behaviour", "lens", "in_context")
    models = {"ga": tiny_ga}
    audit(tiny, models, tiny_target, tmp_path / "whole", gold=tiny_gold, config=config)

    from remnant.attacks import in_context

    real = in_context.run
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # inside the second in-context stage (the gold model's)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(in_context, "run", interrupted)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        audit(tiny, models, tiny_target, resumed, gold=tiny_gold, config=config)
    assert not (resumed / RESULTS_FILE).exists()
    monkeypatch.setattr(in_context, "run", real)
    kept = []
    audit(
        tiny, models, tiny_target, resumed, gold=tiny_gold, config=config,
        on_done=lambda record: kept.append((record["id"], record["kept"])),
    )  # fmt: skip
    assert dict(kept) == {
        "behaviour-original": True, "behaviour-ga": True, "behaviour-gold": True,
        "lens-ga": True, "lens-gold": True, "in_context-ga": True, "in_context-gold": False,
    }  # fmt: skip
    assert (resumed / RESULTS_FILE).read_bytes() == (tmp_path / "whole" / RESULTS_FILE).read_bytes()


def test_a_failing_stage_is_recorded_and_the_audit_goes_on(
    tiny, tiny_ga, tiny_target, tmp_path, monkeypatch
):
    from remnant.probes import lens

    def broken(*args, **kwargs):
        raise RuntimeError("lens broke")

    monkeypatch.setattr(lens, "run", broken)
    config = _stages("behaviour", "lens")
    results = audit(tiny, {"ga": tiny_ga}, tiny_target, tmp_path, config=config)
    status = {stage["id"]: (stage["status"], stage["error"]) for stage in results["stages"]}
    assert status["lens-ga"] == ("failed", "RuntimeError: lens broke")
    assert status["behaviour-ga"] == ("done", None)
    assert results["verdicts"]["ga"]["verdict"] in ("suppressed", "removed")
    monkeypatch.undo()
    again = audit(tiny, {"ga": tiny_ga}, tiny_target, tmp_path, config=config)
    assert [s["status"] for s in again["stages"]] == ["done"] * 3, "a failed stage is retried"


def test_force_recomputes_a_finished_stage(tiny, tiny_ga, tiny_target, tmp_path):
    config = _stages("behaviour")
    audit(tiny, {"ga": tiny_ga}, tiny_target, tmp_path, config=config)
    kept = {}
    audit(
        tiny, {"ga": tiny_ga}, tiny_target, tmp_path, config=config, force=("behaviour-ga",),
        on_done=lambda record: kept.update({record["id"]: record["kept"]}),
    )  # fmt: skip
    assert kept == {"behaviour-original": True, "behaviour-ga": False}


def test_named_configs_load_and_bad_configs_say_what_is_wrong(tmp_path):
    for name in ("quick", "default", "thorough"):
        config = load_config(name)
        assert config.name == name and config.stages == list(STAGES)
        for stage in config.stages:
            config.stage_settings(stage, seed=3)
    assert (
        load_config("quick").stage_settings("relearn").steps
        < load_config("thorough").stage_settings("relearn").steps
    )
    bad = tmp_path / "bad.yaml"
    for text, message in (
        ("stages: [behaviour, wishes]", "unknown stage(s) 'wishes'"),
        ("settings: {relearn: {stepz: 3}}", "RelearnSettings has no setting stepz"),
        ("settings: {relearn: {steps: -1}}", "RelearnSettings.steps must be"),
        ("colour: red", "colour"),
        ("[1, 2", "not valid YAML"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(bad)
    with pytest.raises(ConfigError, match="no audit config 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not run"):
        load_config(TINY_AUDIT).with_stages(["mia"])
