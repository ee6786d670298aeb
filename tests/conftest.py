"""Shared fixtures: the tiny synthetic models (trained once per machine, then cached)."""

from __future__ import annotations

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
