"""Concept-vector validation speed: main's way before this engine (20 random vectors, one
intervention per forward pass, every pass a full forward of the items, a greedy generation
under every random vector) against the default (100 random vectors, each computed from the
block it changes on (`remnant.models.resume`), `ValidateSettings.interventions_per_batch` of
them per pass, greedy generation only for the baseline, the candidates and the set ablation),
side by side in one run on the same model, target and located candidates (SmolLM2-135M-Instruct
and the demo target by default). Both go through `remnant.concept_vectors.validate`; the first
with its resumed passes replaced by full forwards (`FullForwards`), which keeps today's
answer-position-only logits, so it is if anything faster than main was.

Prints both wall times and the ratio (default / before), and checks that the vectors both runs
measure (the candidates and the first 20 random vectors, drawn alike from the same seed) get
the same log-prob drops (max |difference| printed, must be < 1e-5).

    python bench/validation_speed.py [--model smollm2-135m-instruct] [--target demo]
        [--candidates 10] [--threads N]

``--model tiny-synthetic`` (target ``tiny-synthetic``) is a quick check.
"""

from __future__ import annotations

import dataclasses
import time
from unittest import mock

import torch
from common import bench_parser, model_and_target

from remnant.concept_vectors import ValidateResult, ValidateSettings, locate, validate
from remnant.concept_vectors.validate import InterventionScorer
from remnant.models.resume import ResumedBatch
from remnant.scoring.batching import padded_logits


class FullForwards(ResumedBatch):
    """Every intervention computed by a full forward of the batch, as before resumed forwards."""

    def __init__(self, model, ids, mask, starts, keep, prefix=None) -> None:
        self.ids, self.mask = ids, mask
        super().__init__(model, ids, mask, starts, keep)

    def resume(self, start: int, copies: int = 1) -> torch.Tensor:
        ids, mask = self.ids.repeat(copies, 1), self.mask.repeat(copies, 1)
        return padded_logits(self.model, ids, mask, self.keep)


def logprob_drops(result: ValidateResult) -> dict[tuple[int, int], tuple[float, float]]:
    """Forget and retain log-prob drops by (layer, index), of the candidates and random vectors."""
    return {
        (row["layer"], row["index"]): (row["forget_logprob_drop"], row["retain_logprob_drop"])
        for row in result.candidates + result.random
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--candidates", type=int, default=10, help="located vectors tested")
    args = parser.parse_args()
    model, target = model_and_target(args)
    new = ValidateSettings(n_candidates=args.candidates)
    before = dataclasses.replace(new, n_random=20, interventions_per_batch=1, random_accuracy=True)
    located = locate.run(model, target, new.locate)
    InterventionScorer(model, target, new).measure_many([[]], greedy=True)  # warm-up

    timed = {}
    for name, settings in (("before", before), ("default", new)):
        started = time.perf_counter()
        engine = FullForwards if name == "before" else ResumedBatch
        with mock.patch.object(validate, "ResumedBatch", engine):
            result = validate.run(model, target, settings, located=located)
        timed[name] = (time.perf_counter() - started, result)
        generations = sum(row["forget_accuracy"] is not None for row in result.random)
        generations += 1 + len(result.candidates) + 1 + settings.n_random_sets
        print(
            f"{name}: {settings.n_random} random vectors, {settings.interventions_per_batch} "
            f"intervention(s) per pass, {result.n_interventions} interventions, {generations} "
            f"greedy generations: {timed[name][0]:.1f} s ({result.n_validated} of "
            f"{len(result.candidates)} validated)"
        )

    (old_s, old), (new_s, fresh) = timed["before"], timed["default"]
    old_drops, new_drops = logprob_drops(old), logprob_drops(fresh)
    shared = old_drops.keys() & new_drops.keys()
    worst = max(abs(a - b) for v in shared for a, b in zip(old_drops[v], new_drops[v]))
    print(
        f"{model.name}, target {target.name!r} ({old.n_forget} forget + {old.n_retain} retain "
        f"items), {len(old.candidates)} candidates, mode {new.mode}, {torch.get_num_threads()} "
        "threads"
    )
    print(f"max |log-prob drop difference| on {len(shared)} shared vectors = {worst:.2e} (< 1e-5)")
    print(f"ratio default / before: {new_s / old_s:.2f} ({new_s:.1f} s / {old_s:.1f} s)")
    assert len(shared) == len(old.candidates) + len(old.random) and worst < 1e-5


if __name__ == "__main__":
    main()
