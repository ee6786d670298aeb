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
