"""Shared fixtures: the tiny synthetic models (trained once per machine, then cached)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from remnant.models import Model, load_model
from remnant.targets import Target
from remnant.targets.synthetic import SyntheticWorld


@pytest.fixture(scope="session")
def world() -> SyntheticWorld:
    return SyntheticWorld()


@pytest.fixture(scope="session")
def tiny_target(world: SyntheticWorld) -> Target:
    return world.target()


@pytest.fixture(scope="session")
def tiny() -> Model:
    return load_model("tiny-synthetic")


@pytest.fixture(scope="session")
def tiny_gold() -> Model:
    return load_model("tiny-synthetic-gold")


@pytest.fixture(scope="session")
def tiny_ga(tiny: Model, tiny_target: Target, tmp_path_factory) -> Model:
    """The tiny model unlearned by gradient ascent with its preset and no stop rule (forget
    accuracy about 0.4): the attacks' unlearned model, whose held-out facts relearning on
    the fit split brings back."""
    from remnant.unlearning import UnlearningSettings, unlearn

    out = tmp_path_factory.mktemp("unlearned") / "ga"
    settings = UnlearningSettings(method="ga", stop_rule=False, max_new_tokens=8)
    unlearn.run(tiny, tiny_target, settings, out=out)
    return load_model(str(out))


@pytest.fixture(scope="session")
def tiny_report_dir(tmp_path_factory, tiny, tiny_gold, tiny_target) -> Path:
    """An audit folder (results.json, timings.json) made of real Results of the tiny models
    with tiny budgets: behaviour of the original, of the gold model audited as the unlearned
    model "retrain" and as the gold model "gold"; probes, logit lens and the in-context attack;
    hand-written verdicts. The report tests render it (to render a real audit instead, return
    ``tiny_audit[0]``)."""
    from remnant.attacks import in_context
    from remnant.probes import lens, linear
    from remnant.scoring import ScoringSettings, evaluate

    target = tiny_target.model_copy(
        update={"retain": tiny_target.retain[:16], "mcq": tiny_target.mcq[:8]}
    )
    scoring = ScoringSettings(max_new_tokens=8, n_bootstrap=200)
    plain = evaluate(tiny_gold, target, scoring)
    results = {
        "behaviour-original": evaluate(tiny, target, scoring),
        "behaviour-retrain": plain,
        "behaviour-gold": plain,
        "probes-retrain": linear.run(
            tiny, tiny_gold, target, linear.ProbeSettings(tasks=("recall",), folds=3)
        ),
        "lens-retrain": lens.run(tiny, tiny_gold, target, lens.LensSettings(max_new_tokens=8)),
        "in_context-retrain": in_context.run(
            tiny,
            tiny_gold,
            target,
            in_context.InContextSettings(shots=(1, 2), n_bootstrap=200, max_new_tokens=8),
            gold=tiny_gold,
        ),
    }
    stages = [
        {"id": sid, "stage": sid.split("-")[0], "model": sid.split("-")[1], "status": "done",
         "result": result.to_dict(), "error": None}
        for sid, result in results.items()
    ]  # fmt: skip

    def line(rule: str, stage: str, statement: str, fires: bool, decisive: bool = False) -> dict:
        return {"rule": rule, "stage": stage, "statement": statement, "value": 0.1,
                "ci": [0.0, 0.2], "fires": fires, "decisive": decisive}  # fmt: skip

    verdict = {
        "verdict": "removed",
        "collateral_damage": False,
        "evidence": [
            line("forget", "behaviour-retrain", "Forget accuracy is the gold model's.", True, True),
            line("probes", "probes-retrain", "No probe reads the answers above chance.", False),
            line("attacks", "in_context-retrain", "No attack brought answers back.", False),
            line("lens", "lens-retrain", "The logit lens finds no answer at any layer.", False),
        ],
        "collateral": [line("retain", "behaviour-retrain", "Retain accuracy held.", False)],
    }  # fmt: skip
    audit = {
        "schema_version": 1,
        "remnant_version": "0.1.0",
        "inputs": {
            "original": tiny.identity(),
            "models": {
                "retrain": {"identity": tiny_gold.identity(), "role": "unlearned"},
                "gold": {"identity": tiny_gold.identity(), "role": "gold"},
            },
            "target": {
                "name": target.name,
                "n_forget": len(target.forget),
                "n_retain": len(target.retain),
                "n_mcq": len(target.mcq),
            },
            "config": {
                "name": "quick",
                "stages": sorted({s["stage"] for s in stages}),
                "settings": {"behaviour": scoring.record()},
            },
            "seed": 0,
            "versions": {"python": "3", "remnant": "0.1.0"},
        },
        "stages": stages,
        "verdicts": {"retrain": verdict},
        "rules": ["'removed': forget accuracy at the gold model's and nothing brings it back."],
    }
    out = tmp_path_factory.mktemp("audit")
    (out / "results.json").write_text(json.dumps(audit))
    timings = {"stages": {s["id"]: 1.5 for s in stages}, "total": 9.0}
    (out / "timings.json").write_text(json.dumps(timings))
    return out


#: Budgets of the tiny-model audits in the tests.
TINY_AUDIT = Path(__file__).parent / "audit-tiny.yaml"


@pytest.fixture(scope="session")
def tiny_audit(
    tiny: Model, tiny_ga: Model, tiny_gold: Model, tiny_target: Target, tmp_path_factory
) -> tuple[Path, dict[str, Any]]:
    """An audit of the GA-unlearned tiny model, of the original itself (as ``same``) and of
    the gold model, with the budgets of ``audit-tiny.yaml``: its folder and results."""
    from remnant.audit import audit, load_config

    out = tmp_path_factory.mktemp("audit")
    unlearned = {"ga": tiny_ga, "same": tiny}
    results = audit(
        tiny, unlearned, tiny_target, out, gold=tiny_gold, config=load_config(TINY_AUDIT)
    )
    return out, results
