"""Screened vs exact cross-model patching: what the ``--quick`` audit's screen
(`DiffSettings.method="screen"`) saves, and what it changes.

Runs `remnant.tracing.model_diff.run` on the first ``--facts`` known forget facts of the target
(SmolLM2-135M-Instruct and the demo target by default) against the reference ``--unlearned``
method's checkpoint (made once and cached, as `remnant demo` makes it), exact and screened
(``--top`` and ``--sample`` layers per direction and site), side by side in one run. Prints
both wall times and forward tokens and their ratios; per curve, the peak layer of each, the
largest difference of the fraction curves over the layers the screen estimated and over those
it ran, and the sampled layers it missed; and the restored fraction's mean over layers (an audit
signal, `remnant.audit.signals`) by each. Writes
``bench/results/diff-screen-{model}.md``.

    python bench/diff_screen.py [--model smollm2-135m-instruct] [--target demo] [--facts 5]
        [--unlearned npo] [--top 8] [--sample 4] [--threads N]
"""

from __future__ import annotations

import datetime
import platform
import time

import numpy as np
import torch
from common import bench_parser, model_and_target, publish, unlearned_model

from remnant.models.accounting import TOKENS
from remnant.tracing import DiffSettings, model_diff
from remnant.tracing.facts import known_fact_contexts


def largest_gap(a: list, b: list, layers: list[int]) -> str:
    """max |a - b| over ``layers`` (``-`` for none or undefined values)."""
    if not layers or a[0] is None or b[0] is None:
        return "-"
    return f"{np.abs(np.subtract(a, b, dtype=float)[layers]).max():.3f}"


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--facts", type=int, default=5, help="known facts patched")
    parser.add_argument("--unlearned", default="npo", help="reference method: ga, npo or rmu")
    parser.add_argument("--top", type=int, default=DiffSettings.screen_top, help="screen_top")
    parser.add_argument("--sample", type=int, default=DiffSettings.screen_sample,
                        help="screen_sample")  # fmt: skip
    args = parser.parse_args()
    model, target = model_and_target(args)
    unlearned = unlearned_model(model, target, args.unlearned)
    settings = {
        "screen": DiffSettings(
            max_facts=args.facts, method="screen", screen_top=args.top, screen_sample=args.sample
        ),
        "exact": DiffSettings(max_facts=args.facts),
    }
    list(known_fact_contexts(model, target, settings["exact"]))  # the greedy answers, cached
    results, seconds, tokens = {}, {}, {}
    for how, chosen in settings.items():
        started, counted = time.perf_counter(), TOKENS.snapshot()
        results[how] = model_diff.run(model, unlearned, target, chosen)
        seconds[how] = time.perf_counter() - started
        tokens[how] = TOKENS.since(counted)["forward"]
    exact, screened = results["exact"], results["screen"]
    lines = [
        f"# Screened vs exact cross-model patching ({model.name} vs {args.unlearned}, target "
        f"{target.name!r})",
        "",
        f"`python bench/diff_screen.py --model {args.model} --facts {args.facts} --unlearned "
        f"{args.unlearned} --top {args.top} --sample {args.sample}` on "
        f"{datetime.date.today()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads. {len(exact.facts)} facts, "
        f"{exact.n_affected} affected; {exact.n_layers} layers. Both arms run after the greedy "
        "generations that choose the known facts.",
        "",
        f"Cost: exact {seconds['exact']:.0f} s, {tokens['exact']} forward tokens; screen "
        f"{seconds['screen']:.0f} s, {tokens['screen']} forward tokens. Ratio screen / exact: "
        f"time {seconds['screen'] / seconds['exact']:.2f}, tokens "
        f"{tokens['screen'] / tokens['exact']:.2f}.",
        "",
        "| direction | site | scope | layers run | peak: exact / screen | max gap of the "
        "fraction, estimated layers | same, layers run | screen misses |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for ours in screened.curves:
        key = ours["direction"], ours["site"], ours["scope"]
        theirs = exact.curve(*key)
        run = ours["layers_run"]
        guessed = sorted(set(range(exact.n_layers)) - set(run))
        check = ours["screen"]
        lines.append(
            f"| {' | '.join(key)} | {len(run)} | {theirs['peak_layer']} / {ours['peak_layer']} | "
            f"{largest_gap(theirs['fraction_mean'], ours['fraction_mean'], guessed)} | "
            f"{largest_gap(theirs['fraction_mean'], ours['fraction_mean'], run)} | "
            + ("-" if check is None else f"{check['missed']} of {len(check['sample'])}")
            + " |"
        )
    means = [
        np.mean(r.curve("restore", "resid", "all")["fraction_mean"])
        if r.n_affected
        else float("nan")
        for r in (exact, screened)
    ]
    lines += [
        "",
        f"Restored fraction (restore, resid, all), mean over layers: exact {means[0]:.3f}, "
        f"screen {means[1]:.3f}.",
    ]
    publish(lines, f"diff-screen-{args.model}")


if __name__ == "__main__":
    main()
