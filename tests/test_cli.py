"""The command line: tables, JSON shape, and one-line errors with exit code 2."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from remnant.cli import app

runner = CliRunner()


def test_eval_writes_the_documented_json_shape(tiny, tmp_path):
    out = tmp_path / "scores.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            "tiny-synthetic",
            "--target",
            "tiny-synthetic",
            "--json",
            str(out),
            "--max-new-tokens",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "forget" in result.output and "prompt style: plain" in result.output
    data = json.loads(out.read_text())
    assert data["model"]["name"] == "tiny-synthetic" and data["target"] == "tiny-synthetic"
    forget = data["splits"]["forget"]
    assert {"n", "accuracy", "ci", "items"} <= set(forget) and len(forget["ci"]) == 2
    assert forget["n"] == len(forget["items"]) == 24
    assert {"question", "answer", "generation", "correct"} <= set(forget["items"][0])
    assert "retain" in data["splits"]


def test_user_errors_exit_2_without_traceback(tmp_path):
    result = runner.invoke(
        app, ["eval", "--model", "tiny-synthetic", "--target", str(tmp_path / "x.yaml")]
    )
    assert result.exit_code == 2
    assert "target file not found" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["eval", "--model", "nope", "--target", "demo"])
    assert result.exit_code == 2 and "no model 'nope'" in result.output


def test_models_lists_the_embedded_models(tiny):
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "smollm2-135m-instruct" in result.output and "tiny-synthetic-gold" in result.output


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_probe_writes_probe_and_lens_results_with_figures(tiny, tiny_gold, tmp_path):
    from remnant.probes.lens import LensResult
    from remnant.probes.linear import ProbeResult

    out = tmp_path / "probe"
    output = _run(
        "probe", "--original", "tiny-synthetic", "--unlearned", "tiny-synthetic-gold",
        "--target", "tiny-synthetic", "--out", str(out), "--tasks", "recall", "--folds", "3",
    )  # fmt: skip
    assert "recall" in output and "median rank" in output
    probes = ProbeResult.from_json((out / "probes.json").read_text())
    assert list(probes.tasks) == ["recall"] and probes.unlearned["name"] == "tiny-synthetic-gold"
    lens = LensResult.from_json((out / "lens.json").read_text())
    assert len(lens.items) == 24
    assert (out / "probes.png").stat().st_size > 0 and (out / "lens.png").stat().st_size > 0


def test_trace_then_diff_carries_the_storing_layers(tiny, tiny_gold, tmp_path):
    from remnant.tracing import CausalTraceResult, ModelDiffResult

    out = tmp_path / "trace"
    output = _run(
        "trace", "--model", "tiny-synthetic", "--target", "tiny-synthetic", "--out", str(out),
        "--samples", "2", "--max-facts", "2", "--figures", "1",
    )  # fmt: skip
    assert "storing layers" in output
    traced = CausalTraceResult.from_json((out / "trace.json").read_text())
    assert len(traced.facts) == 2 and (out / "trace_fact00.png").exists()
    assert not (out / "trace_fact01.png").exists()
    _run(
        "diff", "--base", "tiny-synthetic", "--unlearned", "tiny-synthetic-gold",
        "--target", "tiny-synthetic", "--out", str(out), "--max-facts", "2",
        "--storing-from", str(out / "trace.json"),
    )  # fmt: skip
    diffed = ModelDiffResult.from_json((out / "diff.json").read_text())
    assert diffed.storing_layers == traced.storing_layers and len(diffed.facts) == 2
    assert (out / "diff.png").exists() and (out / "diff_prob.png").exists()
    missing = runner.invoke(
        app,
        [
            "diff", "--base", "tiny-synthetic", "--unlearned", "tiny-synthetic-gold",
            "--target", "tiny-synthetic", "--out", str(out),
            "--storing-from", str(tmp_path / "none.json"),
        ],
    )  # fmt: skip
    assert missing.exit_code == 2 and "no saved result" in missing.output


def test_ablate_writes_a_checkpoint_and_refuses_to_overwrite(tiny, tmp_path):
    out = tmp_path / "ablated"
    args = ["ablate", "--model", "tiny-synthetic", "--target", "tiny-synthetic", "--out", str(out)]
    vectors = ["--layer", "1", "--index", "3", "--layer", "2", "--index", "5"]
    output = _run(*args, *vectors, "--max-new-tokens", "8")
    assert "zero ablation of 2 vector(s) (given)" in output
    report = json.loads((out / "remnant-ablation.json").read_text())
    assert [(v["layer"], v["index"]) for v in report["vectors"]] == [(1, 3), (2, 5)]
    assert report["output_content_hash"] != report["source"]["content_hash"]
    again = runner.invoke(app, [*args, *vectors])
    assert again.exit_code == 2 and "--overwrite" in again.output
    unpaired = runner.invoke(app, [*args, "--overwrite", "--layer", "1"])
    assert unpaired.exit_code == 2 and "pairs" in unpaired.output


def test_concepts_locates_validates_and_compares(tiny, tiny_gold, tmp_path):
    from remnant.concept_vectors import CompareResult, ValidateResult

    out = tmp_path / "concepts"
    output = _run(
        "concepts", "--model", "tiny-synthetic", "--target", "tiny-synthetic", "--out", str(out),
        "--candidates", "2", "--random", "20", "--unlearned", "tiny-synthetic-gold",
    )  # fmt: skip
    assert "validated" in output and "tiny-synthetic-gold: cosine" in output
    checked = ValidateResult.from_json((out / "validate.json").read_text())
    assert len(checked.candidates) == 2 and len(checked.random) == 20
    compared = CompareResult.from_json((out / "compare0.json").read_text())
    assert compared.unlearned["name"] == "tiny-synthetic-gold"
    assert (out / "locate.png").exists() and (out / "compare0.png").exists()


def test_audit_and_report_commands_write_verdicts_and_html(tiny_ga, tmp_path):
    from conftest import TINY_AUDIT

    out = tmp_path / "audit"
    args = [
        "audit", "--original", "tiny-synthetic", "--unlearned", f"ga={tiny_ga.source}",
        "--unlearned", "tiny-synthetic-gold", "--target", "tiny-synthetic", "--out", str(out),
        "--config", str(TINY_AUDIT), "--stages", "behaviour,lens",
    ]  # fmt: skip
    first = _run(*args)
    assert "ga" in first and "tiny-synthetic-gold" in first and "verdict" in first
    assert (out / "index.html").is_file() and (out / "results.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert list(results["verdicts"]) == ["ga", "tiny-synthetic-gold"]
    assert [s["id"] for s in results["stages"]][:3] == [
        "behaviour-original", "behaviour-ga", "behaviour-tiny-synthetic-gold"
    ]  # fmt: skip
    (out / "index.html").unlink()
    rendered = _run("report", str(out))
    assert (out / "index.html").is_file() and "report:" in rendered
    again = runner.invoke(app, args + ["--quick"])
    assert again.exit_code == 2 and "one of --config, --quick and --thorough" in again.output
    twice = runner.invoke(app, args[:3] + ["--unlearned", "x/ga"] + args[3:])
    assert twice.exit_code == 2 and "two unlearned models are named 'ga'" in twice.output
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "run `remnant audit` first" in missing.output


def test_demo_audits_reference_checkpoints_and_rerun_keeps_every_stage(tiny, tmp_path):
    config = tmp_path / "two-stages.yaml"
    config.write_text("stages: [behaviour, lens]\nsettings: {behaviour: {max_new_tokens: 8}}\n")
    out = tmp_path / "demo"
    args = ["demo", "--model", "tiny-synthetic", "--target", "tiny-synthetic", "--out", str(out),
            "--methods", "npo", "--config", str(config)]  # fmt: skip
    first = _run(*args)
    assert "kept" not in first and (out / "index.html").is_file()
    results = json.loads((out / "results.json").read_text())
    assert list(results["verdicts"]) == ["npo", "gold"]
    assert results["verdicts"]["gold"]["verdict"] == "removed"
    second = _run(*args)
    assert second.count(": kept (") == len(results["stages"]), second
    assert json.loads((out / "results.json").read_text()) == results


def test_help_says_what_remnant_does_and_version_prints():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Audit a language model after machine unlearning" in result.output
    assert "``" not in result.output and "front-end" not in result.output
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("remnant ")


def test_choices_are_checked_by_the_parser():
    result = runner.invoke(
        app, ["eval", "--model", "tiny-synthetic", "--target", "demo", "--prompt-style", "Chat"]
    )
    assert result.exit_code == 2 and "Chat" in result.output


_ATTACK_MODELS = (
    "--original", "tiny-synthetic", "--unlearned", "tiny-synthetic-gold",
    "--target", "tiny-synthetic",
)  # fmt: skip


def _row(output: str, condition: str) -> str:
    """The first table line of ``condition``'s row."""
    return next(line for line in output.splitlines() if line.startswith(f"│ {condition} "))


def test_attack_in_context_writes_result_figures_and_table(tiny, tiny_gold, tmp_path):
    from remnant.attacks.protocol import AttackResult

    out = tmp_path / "attack"
    output = _run(
        "attack", *_ATTACK_MODELS, "--gold", "tiny-synthetic-gold", "--out", str(out),
        "--attacks", "in_context", "--shots", "1,2", "--max-new-tokens", "6",
        "--held-out-fraction", "0.3",
    )  # fmt: skip
    result = AttackResult.from_json((out / "attack-in_context.json").read_text())
    names = [c["name"] for c in result.conditions]
    assert names[:3] == ["plain", "k=1", "k=2"] and "k=4" not in names
    assert result.models["gold"]["name"] == "tiny-synthetic-gold"
    assert result.settings["max_new_tokens"] == 6 and result.settings["held_out_fraction"] == 0.3
    assert "in_context on tiny-synthetic" in output
    for condition in result.conditions:  # each row: n, then each model's accuracy, in order
        cells = [c.strip() for c in _row(output, condition["name"]).split("│")[1:-1]]
        scores = condition["scores"]
        assert cells[2] == str(scores["unlearned"]["n"])
        assert [c.split()[0] for c in cells[3:6]] == [
            f"{scores[role]['accuracy']:.3f}" for role in ("original", "unlearned", "gold")
        ]
    for png in ("attack-in_context.png", "attack-in_context-k.png"):
        assert (out / png).stat().st_size > 0, png


def test_attack_table_gives_the_reason_gap_recovery_is_undefined(tiny, tmp_path):
    out = tmp_path / "attack"
    output = _run(
        "attack", "--original", "tiny-synthetic", "--unlearned", "tiny-synthetic",
        "--target", "tiny-synthetic", "--out", str(out), "--attacks", "in_context",
        "--shots", "1", "--max-new-tokens", "6", "--held-out-fraction", "0.2",
    )  # fmt: skip
    # the same model twice: unlearning removed nothing, so there is no gap to recover
    assert _row(output, "plain").rstrip(" │").endswith("undefined")
    assert _row(output, "k=1").rstrip(" │").endswith("undefined")
    words = " ".join(output.split())  # the reason may wrap
    assert words.count("gap recovery undefined for plain, k=1") == 1 and "includes 0" in words
    assert "│ -" in _row(output, "plain")  # no gold model given


def test_attack_runs_the_other_attacks_in_the_order_given(tiny, tiny_gold, tmp_path):
    from remnant.attacks.mia import MIAResult
    from remnant.attacks.protocol import AttackResult

    out = tmp_path / "attack"
    output = _run(
        "attack", *_ATTACK_MODELS, "--out", str(out), "--attacks", "mia,variants,reasoning",
        "--max-new-tokens", "4", "--held-out-fraction", "0.2",
    )  # fmt: skip
    titles = ["membership inference", "variants on", "reasoning on"]
    assert [output.index(title) for title in titles] == sorted(output.index(t) for t in titles)
    mia = MIAResult.from_json((out / "attack-mia.json").read_text())
    assert set(mia.comparisons) == {"passages", "qa"} and "gold" not in mia.models
    for name, comparison in mia.comparisons.items():
        for role, record in comparison["roles"].items():
            auroc = record["scores"]["min_k_pp"]["auroc"]
            assert any(
                line.startswith(f"│ {name} ") and role in line and f"{auroc:.3f}" in line
                for line in output.splitlines()
            ), (name, role)
    assert all(flag[:30] in output for flag in mia.flags)
    for name in ("variants", "reasoning"):
        result = AttackResult.from_json((out / f"attack-{name}.json").read_text())
        assert result.attack == name and result.settings["max_new_tokens"] == 4
        assert len(result.split["held_out"]) < len(result.split["fit"])
    for name in ("mia", "variants", "reasoning"):
        assert (out / f"attack-{name}.png").stat().st_size > 0, name
    assert not (out / "attack-in_context.json").exists()


def test_attack_runs_the_white_box_attacks_with_their_budget_flags(tiny, tiny_gold, tmp_path):
    from remnant.attacks.embedding import EmbeddingResult
    from remnant.attacks.quantize import QuantizeResult
    from remnant.attacks.relearn import RelearnResult

    out = tmp_path / "attack"
    output = _run(
        "attack", *_ATTACK_MODELS, "--out", str(out), "--attacks", "quantize,relearn,embedding",
        "--max-new-tokens", "4", "--steps", "2", "--lr", "1e-4", "--lora-rank", "4",
        "--rtt-rounds", "0", "--soft-iterations", "2", "--soft-tokens", "3",
        "--n-samples", "1", "--bits", "4", "--group-size", "16",
    )  # fmt: skip
    titles = ["quantization on", "relearning on", "embedding noise on", "soft prompt on"]
    assert [output.index(title) for title in titles] == sorted(output.index(t) for t in titles)
    relearned = RelearnResult.from_json((out / "attack-relearn.json").read_text())
    assert relearned.settings["steps"] == 2 and relearned.settings["lora_rank"] == 4
    assert relearned.rtt is None and relearned.line == "unlearned before relearning"
    assert all(curve["steps"] == [0, 2] for curve in relearned.curves)
    quantized = QuantizeResult.from_json((out / "attack-quantize.json").read_text())
    assert [c["name"] for c in quantized.conditions] == [
        "full precision", "int4 symmetric", "int4 asymmetric"
    ]  # fmt: skip
    for condition in quantized.conditions:
        forget = condition["scores"]["unlearned"]["forget"]["accuracy"]
        assert any(
            line.startswith(f"│ {condition['name']} ") and f"{forget:.3f}" in line
            for line in output.splitlines()
        ), condition["name"]
    attacked = EmbeddingResult.from_json((out / "attack-embedding.json").read_text())
    assert attacked.settings["soft_tokens"] == 3 and attacked.settings["n_samples"] == 1
    for png in ("relearn", "quantize", "embedding-noise", "embedding-soft-prompt"):
        assert (out / f"attack-{png}.png").stat().st_size > 0, png


def test_attack_rejects_unknown_names_and_bad_shots(tmp_path):
    args = ["attack", *_ATTACK_MODELS, "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--attacks", "in_context,jailbreak"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        "'jailbreak'" in result.output and "in_context, reasoning, variants, mia" in result.output
    )
    result = runner.invoke(app, [*args, "--attacks", "in_context", "--shots", "1,two"])
    assert result.exit_code == 2 and "--shots" in result.output
    result = runner.invoke(app, [*args, "--attacks", "in_context", "--held-out-fraction", "1"])
    assert result.exit_code == 2 and "held_out_fraction" in result.output
    assert not any(tmp_path.iterdir())


def test_attack_help_lists_its_options():
    result = runner.invoke(app, ["attack", "--help"])
    assert result.exit_code == 0
    for option in (
        "--original", "--unlearned", "--gold", "--target", "--attacks", "--out",
        "--held-out-fraction", "--shots", "--max-new-tokens", "--prompt-style", "--batch-size",
        "--seed",
    ):  # fmt: skip
        assert option in result.output, option
