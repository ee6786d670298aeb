"""Shared prompt prefixes: QA scoring and greedy generation with the prompts' common prefix (the
chat template's system turn) run once per call (`remnant.scoring.batching.SharedPrefix`)
against every token of every row run, side by side in one run on the same model and items
(SmolLM2-135M-Instruct and the demo target's forget and retain questions by default, in the
model's prompt style).

Arms: answer log-probabilities by right padding (logits at every position; the default before
this change), by left padding (logits at the answer's positions only) without and with the
shared prefix; greedy generation without and with it. Prints each arm's wall time (median of
``--repeats``) and forward tokens, the ratios, the prefix length, and checks that every arm
gives the same log-probabilities (max |difference|, < 1e-4) and the same generations.

    python bench/shared_prefix.py [--model smollm2-135m-instruct] [--target demo]
        [--max-new-tokens 24] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
from common import bench_parser, model_and_target, publish

from remnant.models.accounting import TOKENS
from remnant.scoring import encode_answers, encode_prompts, format_prompt, resolve_style
from remnant.scoring.batching import SharedPrefix, sequence_logprobs
from remnant.scoring.generation import GENERATIONS, generate

NO_PREFIX = mock.patch("remnant.scoring.batching.MIN_SHARED_PREFIX", 10**9)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, int]:
    """``fn()``'s value, its median wall time over ``repeats`` calls, and its forward tokens."""
    times = []
    for _ in range(repeats):
        counted, started = TOKENS.snapshot(), time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
        tokens = TOKENS.since(counted)["forward"]
    return value, statistics.median(times), tokens


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="generation length")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm (median)")
    args = parser.parse_args()
    model, target = model_and_target(args)
    style = resolve_style(model, "auto")
    items = [*target.forget, *target.retain]
    prompts = encode_prompts(model, [format_prompt(model, i.question, style) for i in items], style)
    answers = encode_answers(model, [i.answer for i in items], style)

    def scores(padding_side: str) -> Callable[[], list[np.ndarray]]:
        return lambda: sequence_logprobs(model, prompts, answers, padding_side=padding_side)

    def greedy() -> list[str]:
        GENERATIONS.clear()  # generate every time, not from the store
        return generate(model, prompts, max_new_tokens=args.max_new_tokens)

    arms: dict[str, tuple[Any, float, int]] = {}
    with NO_PREFIX:
        arms["log-probs, right padding"] = timed(scores("right"), args.repeats)
        arms["log-probs, left padding"] = timed(scores("left"), args.repeats)
        arms["generation"] = timed(greedy, args.repeats)
    arms["log-probs, left padding, shared prefix"] = timed(scores("left"), args.repeats)
    arms["generation, shared prefix"] = timed(greedy, args.repeats)
    reference = arms["log-probs, right padding"][0]
    gaps = {
        name: max(float(np.abs(a - b).max()) for a, b in zip(value, reference))
        for name, (value, _, _) in arms.items()
        if name.startswith("log-probs") and name != "log-probs, right padding"
    }
    same_text = arms["generation"][0] == arms["generation, shared prefix"][0]
    lines = [
        f"# Shared prompt prefixes ({model.name}, target {target.name!r})",
        "",
        f"`python bench/shared_prefix.py --model {args.model} --max-new-tokens "
        f"{args.max_new_tokens} --repeats {args.repeats}`: {len(items)} questions, prompt style "
        f"{style}, mean prompt {np.mean([len(p) for p in prompts]):.1f} tokens of which "
        f"{SharedPrefix(model, prompts).length} shared.",
        "",
        "| arm | median s | forward tokens | max abs log-prob difference to right padding |",
        "|---|---:|---:|---:|",
    ]
    for name, (_, seconds, tokens) in arms.items():
        gap = f"{gaps[name]:.1e}" if name in gaps else "-"
        lines.append(f"| {name} | {seconds:.2f} | {tokens} | {gap} |")
    seconds = {name: arm[1] for name, arm in arms.items()}
    shared = seconds["log-probs, left padding, shared prefix"]
    lines += [
        "",
        f"Ratios (shared prefix / every token run): log-probs "
        f"{shared / seconds['log-probs, left padding']:.2f} (against right padding "
        f"{shared / seconds['log-probs, right padding']:.2f}), generation "
        f"{seconds['generation, shared prefix'] / seconds['generation']:.2f}. Same generations: "
        f"{same_text}.",
    ]
    publish(lines, f"shared-prefix-{args.model}")
    if max(gaps.values()) > 1e-4 or not same_text:
        raise SystemExit("the shared prefix changed a score")


if __name__ == "__main__":
    main()
