"""Margins of the tiny-synthetic unlearning presets over seeds of the unlearning run.

For each method and seed (the config's ``seed``: data order, retain split, LoRA init, RMU's
vector), unlearns the built-in ``tiny-synthetic`` target from the tiny model with the method's
preset and prints greedy forget accuracy before/after, held-out retain accuracy before/after,
the steps taken (of the maximum) and the margin to each bound of
``tests/test_unlearning.py::test_method_forgets_and_keeps_retain``:
forget margin = before/2 − after (must be ≥ 0), retain margin = after − (before − 0.15)
(must be ≥ 0). When the stop rule fires (column ``stop``: ``rule``; ``budget`` if it ran the
whole maximum) the forget margin is ≥ 0 by construction, so the margins that matter are the
retain margin and the budget left (steps taken of the maximum). One torch thread; seconds
include copying the model in and writing the checkpoint (to a temporary folder).
Usage: ``python bench/unlearning_margins.py [seeds] [methods]`` with comma-separated lists,
e.g. ``0,1,2 ga,graddiff``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from remnant.models import load_model
from remnant.targets.synthetic import SyntheticWorld
from remnant.unlearning import UnlearningSettings, unlearn

METHODS = ("ga", "graddiff", "npo", "rmu")
RETAIN_DROP = 0.15  # the test's bound on the held-out retain accuracy drop


def main(seeds: tuple[int, ...] = (0, 1, 2), methods: tuple[str, ...] = METHODS) -> None:
    torch.set_num_threads(1)
    tiny = load_model("tiny-synthetic")
    target = SyntheticWorld().target()
    print(
        f"{'method':9} {'seed':>4} {'forget':>13} {'margin':>7} {'retain (held out)':>17} "
        f"{'margin':>7} {'steps':>7} {'epochs':>6} {'stop':>6} {'seconds':>7}"
    )
    worst: dict[str, tuple[float, float]] = {}
    for method in methods:
        for seed in seeds:
            settings = UnlearningSettings(method=method, overrides={"seed": seed})
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="remnant-margins-") as tmp:
                result = unlearn.run(tiny, target, settings, out=Path(tmp) / method)
            seconds = time.perf_counter() - started
            before, after, training = result.before, result.after, result.training
            f0, f1 = before["forget"]["accuracy"], after["forget"]["accuracy"]
            r0, r1 = before["retain"]["accuracy"], after["retain"]["accuracy"]
            forget_margin, retain_margin = f0 / 2 - f1, r1 - (r0 - RETAIN_DROP)
            low = worst.get(method, (1.0, 1.0))
            worst[method] = (min(low[0], forget_margin), min(low[1], retain_margin))
            steps = f"{training['steps']}/{training['max_steps']}"
            stop = "rule" if training["stop_rule"] and training["stop_rule"]["fired"] else "budget"
            print(
                f"{method:9} {seed:>4} {f0:>6.3f}>{f1:<6.3f} {forget_margin:>+7.3f} "
                f"{r0:>8.3f}>{r1:<8.3f} {retain_margin:>+7.3f} {steps:>7} "
                f"{training['epochs']:>6.2f} {stop:>6} {seconds:>7.1f}"
            )
    for method, (forget_margin, retain_margin) in worst.items():
        print(
            f"worst {method}: forget margin {forget_margin:+.3f}, "
            f"retain margin {retain_margin:+.3f}"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        tuple(int(s) for s in args[0].split(",")) if args else (0, 1, 2),
        tuple(args[1].split(",")) if len(args) > 1 else METHODS,
    )
