"""Which way of locating concept vectors finds vectors that carry the concept: vocabulary
projection or attribution (`remnant.concept_vectors.locate`, ``method``)?

Both rankings' top candidates go through the same random-vector validation
(`remnant.concept_vectors.validate`, 100 layer-matched random draws per candidate, zero
ablation) on the same items: those neither ranking read (about half the forget items, whole
people, and every other retain item; projection's concept tokens come from the other half).
Prints, per method, how many candidates validate (about 5% would by chance), each candidate's
forget and retain log-prob drops beside the random thresholds, and the set ablation (all
candidates zeroed together: greedy forget and retain accuracy drops against as many
layer-matched random vectors); writes ``bench/results/locate-methods-{model}.md``.

    python bench/locate_methods.py [--model smollm2-135m-instruct] [--target demo]
        [--candidates 10] [--threads N]
"""

from __future__ import annotations

import datetime
import platform
import time

import torch
from common import bench_parser, model_and_target, publish

from remnant.concept_vectors import ValidateSettings, locate, validate
from remnant.concept_vectors.locate import LocateSettings, fit_half
from remnant.concept_vectors.validate import unread


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--candidates", type=int, default=10, help="top vectors validated")
    args = parser.parse_args()
    model, target = model_and_target(args)
    lines = [
        f"# Locating concept vectors: projection vs attribution ({model.name}, target "
        f"{target.name!r})",
        "",
        f"`python bench/locate_methods.py --model {args.model} --candidates {args.candidates}` "
        f"on {datetime.date.today()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads.",
        "",
    ]
    located, seconds = {}, {}
    # projection reads the forget answers' tokens (its concept set), so it too sees only the
    # half attribution reads: both are then validated on items neither ranking read
    forget, retain = fit_half(target, seed=0)
    fit = target.model_copy(update={"forget": forget, "retain": retain})
    for method, items in (("attribution", target), ("projection", fit)):
        started = time.perf_counter()
        located[method] = locate.run(
            model, items, LocateSettings(method=method, n_candidates=args.candidates)
        )
        seconds[method] = time.perf_counter() - started
    held_out = unread(target, located["attribution"])
    lines += [
        f"Validated on the {len(held_out.forget)} forget and {len(held_out.retain)} retain items "
        f"neither ranking read (of {len(target.forget)} and "
        f"{len(target.retain)}); zero ablation against 100 layer-matched random vectors per "
        "candidate; a candidate validates when its forget log-prob drop exceeds the random "
        "draws' 95th percentile and its retain drop does not exceed their largest.",
        "",
        "| method | locate (s) | validate (s) | validated | expected by chance | set ablation: "
        "forget acc. drop | retain acc. drop | random sets: forget | retain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    details = []
    for method, found in located.items():
        started = time.perf_counter()
        checked = validate.run(
            model, held_out, ValidateSettings(n_candidates=args.candidates), located=found
        )
        took = time.perf_counter() - started
        together = checked.set_ablation
        chosen, random = together["chosen"], together["random_mean"]
        lines.append(
            f"| {method} | {seconds[method]:.0f} | {took:.0f} | {checked.n_validated} of "
            f"{len(checked.candidates)} | {checked.expected_false_positives:.1f} | "
            f"{chosen['forget_accuracy_drop']:+.3f} | {chosen['retain_accuracy_drop']:+.3f} | "
            f"{random['forget_accuracy_drop']:+.3f} | {random['retain_accuracy_drop']:+.3f} |"
        )
        thresholds = checked.thresholds
        details += [
            "",
            f"## {method}: candidates (forget drop threshold {thresholds['forget_drop']:+.4f} "
            f"nats, retain drop max {thresholds['retain_drop_max']:+.4f})",
            "",
            "| vector | sign | score | forget drop | retain drop | p | validated | top tokens |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for row in checked.candidates:
            tokens = ", ".join(repr(t) for t in row["top_tokens"][:6])
            details.append(
                f"| L{row['layer']}:{row['index']} | {row['sign']:+d} | "
                f"{row['located_score']:.4g} | "
                f"{row['forget_logprob_drop']:+.4f} | {row['retain_logprob_drop']:+.4f} | "
                f"{row['p_value']:.3f} | {'yes' if row['validated'] else 'no'} | {tokens} |"
            )
    publish(lines + details, f"locate-methods-{args.model}")


if __name__ == "__main__":
    main()
