"""Concept-vector validation's log-probabilities with the prompts' shared prefix (the chat
template's system turn) run once per intervention and batch, against run in every row, side by
side in one run: the forget and retain log-probabilities of the demo items under the baseline
and ``--draws`` random value vectors (layer-matched to the top located candidates, as
`remnant.concept_vectors.validate` draws them), both through `InterventionScorer.logprobs`
(`ResumedBatch`); the second arm with the shared prefix emptied. Prints both wall times, the
forward tokens each pushed, the ratio, and the largest difference (must be < 1e-5).

    python bench/validation_prefix.py [--draws 100] [--threads N]
"""

from __future__ import annotations

import contextlib
import datetime
import time
from unittest import mock

import numpy as np
import torch
from common import bench_parser, model_and_target, publish

from remnant.concept_vectors import ValidateSettings, locate, validate
from remnant.concept_vectors.validate import InterventionScorer
from remnant.concept_vectors.vectors import random_vectors
from remnant.models.accounting import TOKENS
from remnant.scoring.batching import SharedPrefix


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--draws", type=int, default=100, help="random value vectors")
    args = parser.parse_args()
    model, target = model_and_target(args)
    settings = ValidateSettings()
    located = locate.run(model, target, settings.locate)
    layers = [layer for layer, _ in located.vectors(settings.n_candidates)]
    rng = np.random.default_rng(settings.seed)
    draws = random_vectors(layers, model.d_mlp, args.draws, rng, located.vectors())
    interventions = [[], *([vector] for vector in draws)]
    scorer = InterventionScorer(model, target, settings)
    scorer.logprobs(interventions[:2])  # warm-up
    arms = {}
    for arm in ("every row", "shared"):
        unshared = mock.patch.object(
            validate, "SharedPrefix", lambda model, prompts: SharedPrefix(model, [])
        )
        before, started = TOKENS.snapshot(), time.perf_counter()
        with unshared if arm == "every row" else contextlib.nullcontext():
            measured = scorer.logprobs(interventions)
        seconds, tokens = time.perf_counter() - started, TOKENS.since(before)["forward"]
        arms[arm] = (np.array([[m["forget_logprob"], m["retain_logprob"]] for m in measured]),
                     seconds, tokens)  # fmt: skip
        print(f"{arm}: {seconds:.1f} s, {tokens} forward tokens", flush=True)
    (old, old_s, old_t), (new, new_s, new_t) = arms["every row"], arms["shared"]
    worst = float(np.abs(old - new).max())
    prefix = SharedPrefix(model, scorer.prompts).length
    lines = [
        f"# Validation log-probabilities with a shared prefix: {args.model}, target {target.name}",
        "",
        f"Command: `python bench/validation_prefix.py --draws {args.draws}`  ",
        f"Date: {datetime.date.today().isoformat()}; {torch.get_num_threads()} torch threads  ",
        f"{len(interventions)} interventions (the baseline and {args.draws} random value "
        f"vectors in the layers of the top {settings.n_candidates} located candidates) over "
        f"{len(scorer.prompts)} items; shared prefix {prefix} tokens; "
        f"{settings.interventions_per_batch} interventions per pass",
        "",
        "| prefix | wall (s) | forward tokens |",
        "|---|---:|---:|",
        f"| run in every row | {old_s:.1f} | {old_t} |",
        f"| run once per intervention and batch | {new_s:.1f} | {new_t} |",
        "",
        f"Ratio shared / every row: wall {new_s / old_s:.2f}, tokens {new_t / old_t:.2f}; "
        f"largest log-prob difference {worst:.1e} nats (must be < 1e-5).",
    ]
    publish(lines, f"validation-prefix-{args.model}")
    assert worst < 1e-5


if __name__ == "__main__":
    main()
