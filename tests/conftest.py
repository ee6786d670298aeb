"""Shared fixtures: the tiny synthetic models (trained once per machine, then cached)."""

from __future__ import annotations

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
    """The tiny model unlearned by gradient ascent with its preset until greedy forget accuracy
    is at most 0.4, checked after every step: the attacks' unlearned model, whose held-out
    facts relearning on the fit split brings back. A stop rule, not a fixed step count: GA's
    collapse is steep (here forget accuracy 0.62 after 60 steps, 0.33 after 72) and where it
    falls moves with the float-level differences a machine's CPU puts into the tiny model."""
    from remnant.unlearning import UnlearningSettings, unlearn

    out = tmp_path_factory.mktemp("unlearned") / "ga"
    settings = UnlearningSettings(method="ga", overrides={"stop_fraction": 0.4}, max_new_tokens=8)
    unlearn.run(tiny, tiny_target, settings, out=out)
    return load_model(str(out))


@pytest.fixture(scope="session")
def tiny_report_dir(tiny_audit: tuple[Path, dict[str, Any]]) -> Path:
    """The folder of the tiny audit (results.json, timings.json, stage records): the report
    tests render a real audit."""
    return tiny_audit[0]


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
