"""Every remnant analysis once, from Python, on the tiny synthetic model (under a minute once
the tiny models are cached; the first run trains them).

The "unlearned" model here is the tiny model's gold twin, trained without the forget set: exact
unlearning, so every analysis should find the forgotten facts gone. Run it as

    python examples/tour.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import remnant as rm


def main(out: Path) -> None:
    started = time.perf_counter()
    original = rm.load_model("tiny-synthetic")
    unlearned = rm.load_model("tiny-synthetic-gold")
    target = rm.load_target("tiny-synthetic")

    def show(name: str, result: rm.Result) -> None:
        print(f"{name:>9} ({time.perf_counter() - started:4.0f} s): {result.summary()}")

    show("evaluate", rm.evaluate(unlearned, target, rm.ScoringSettings(max_new_tokens=8)))
    probe_settings = rm.ProbeSettings(tasks=("recall",), folds=3)
    show("probe", rm.probe(original, unlearned, target, probe_settings))
    show("lens", rm.logit_lens(original, unlearned, target, rm.LensSettings(max_new_tokens=8)))
    traced = rm.trace(original, target, rm.TraceSettings(max_facts=2, n_samples=2))
    show("trace", traced)
    diff_settings = rm.DiffSettings(max_facts=2)
    storing = traced.storing_layers
    show("diff", rm.diff(original, unlearned, target, diff_settings, storing_layers=storing))
    located = rm.locate(original, target, rm.LocateSettings(n_candidates=10))
    show("locate", located)
    checked = rm.validate(original, target, rm.ValidateSettings(n_candidates=2), located=located)
    show("validate", checked)
    vectors, signs = checked.comparison_vectors()
    compare_settings = rm.CompareSettings(n_random=20)
    compared = rm.compare(
        original, unlearned, target, compare_settings, vectors=vectors, signs=signs
    )
    show("compare", compared)
    ablate_settings = rm.AblateSettings(n_vectors=2, max_new_tokens=8)
    show("ablate", rm.ablate(original, target, ablate_settings, out=out / "ablated"))
    retrain = rm.UnlearningSettings(method="retrain", max_new_tokens=8)
    show("unlearn", rm.unlearn(original, target, retrain, out=out / "retrained"))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="remnant-tour-") as tmp:
            main(Path(tmp))
