"""Shared fixtures: the tiny synthetic models (trained once per machine, then cached), and how
the suite runs on pytest-xdist workers (``make test``: ``-n 2 --dist loadgroup``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from remnant.models import EMBEDDED, Model, load_model
from remnant.targets import Target
from remnant.targets.synthetic import SyntheticWorld

#: The embedded models the session fixtures load.
PREBUILT = ("tiny-synthetic", "tiny-synthetic-gold")


def pytest_sessionstart(session: pytest.Session) -> None:
    """In the controller of an xdist run, before the workers start, build the `PREBUILT` models
    one after the other on every core (once per machine), so that no worker sits idle waiting
    for a model another one trains (one alone on two threads took 149 s here; two side by side
    on one thread each, 291 s)."""
    workers = getattr(session.config.option, "numprocesses", None)
    if workers and not os.environ.get("PYTEST_XDIST_WORKER"):
        for name in PREBUILT:
            EMBEDDED[name].prepare()


def pytest_configure(config: pytest.Config) -> None:
    """On xdist workers, torch gets the worker's share of the CPU cores (one each on 2 cores)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for ``--dist loadgroup``: a module's tests run on one worker (its module
    fixtures are made once), and every module that reads the tiny audit on the same worker (the
    session fixture is made once)."""
    reads_audit = {item.module.__name__ for item in items if "tiny_audit" in item.fixturenames}
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("tiny_audit" if module in reads_audit else module))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: the tiny model's matrices are too small to gain from a
    second, and on a shared CPU two threads are several times slower than one (concept-vector
    validation 1.5 s against 6.7 s; the SmolLM2 world test under 30 s against over 5 minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
def tiny_ga(tiny: Model, tiny_target: Target) -> Model:
    """The tiny model unlearned by gradient ascent with its preset until greedy forget accuracy
    is at most 0.4, checked after every step: the attacks' unlearned model, whose held-out
    facts relearning on the fit split brings back. A stop rule, not a fixed step count: GA's
    collapse is steep (here forget accuracy 0.62 after 60 steps, 0.33 after 72) and where it
    falls moves with the float-level differences a machine's CPU puts into the tiny model.
    Cached by the tiny model's content hash (`cached_run`): made once however many workers."""
    from remnant.unlearning import UnlearningSettings, cached_run

    settings = UnlearningSettings(method="ga", overrides={"stop_fraction": 0.4}, max_new_tokens=8)
    return load_model(str(cached_run(tiny, tiny_target, settings)))


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
