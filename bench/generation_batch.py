"""Greedy generation throughput by batch size, and what the kept generations save.

Decoding a token reads every weight, so on a CPU a decoding step for a few rows costs nearly as
much as for many: the new tokens per second grow with the batch. Every arm generates the same
prompts with nothing kept, and must produce the same texts; a last arm asks again for them with
the generations kept from the first (`remnant.scoring.GENERATIONS`). The prompts are the
target's forget and retain questions, each asked in ``--copies`` wordings (`WORDINGS`: a prompt
asked twice in one call is generated once, so copies must differ to fill the largest batch).
"""

from __future__ import annotations

import time

from common import bench_parser, model_and_target, publish

from remnant.models.accounting import TOKENS
from remnant.scoring import encode_prompts, format_prompt, resolve_style
from remnant.scoring.generation import GENERATIONS, generate

#: What each copy of a question adds to it.
WORDINGS = ("", " Answer briefly.", " Answer in a few words.")


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="generation length")
    parser.add_argument("--copies", type=int, default=2, help="times each question is asked")
    parser.add_argument("--sizes", default="16,32,64,128", help="batch sizes")
    args = parser.parse_args()
    model, target = model_and_target(args)
    style = resolve_style(model, "auto")
    if not 1 <= args.copies <= len(WORDINGS):
        parser.error(f"--copies must be between 1 and {len(WORDINGS)}")
    questions = [
        i.question + wording
        for wording in WORDINGS[: args.copies]
        for i in (*target.forget, *target.retain)
    ]
    prompts = encode_prompts(model, [format_prompt(model, q, style) for q in questions], style)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, texts = [], {}
    for size in sizes:
        GENERATIONS.clear()
        counted, started = TOKENS.snapshot(), time.perf_counter()
        texts[size] = generate(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=size)
        seconds = time.perf_counter() - started
        rows.append((f"batch {size}", seconds, TOKENS.since(counted)["forward"]))
    counted, started = TOKENS.snapshot(), time.perf_counter()
    again = generate(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=sizes[-1])
    rows.append(
        ("kept (asked again)", time.perf_counter() - started, TOKENS.since(counted)["forward"])
    )
    generated = sum(len(model.tokenizer(t).input_ids) for t in texts[sizes[0]])
    same = all(texts[s] == texts[sizes[0]] for s in sizes) and again == texts[sizes[0]]
    base = rows[0][1]
    lines = [
        f"# Generation batch size ({model.name}, target {target.name!r})",
        "",
        f"`python bench/generation_batch.py --model {args.model} --max-new-tokens "
        f"{args.max_new_tokens} --copies {args.copies} --sizes {args.sizes}`: {len(prompts)} "
        f"prompts, {args.max_new_tokens} new tokens at most (about {generated} generated).",
        "",
        "| arm | seconds | forward tokens | ratio to batch " + str(sizes[0]) + " |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {s:.2f} | {tokens} | {s / base:.2f} |" for name, s, tokens in rows),
        "",
        f"Every arm's texts identical: {same}.",
    ]
    publish(lines, f"generation-batch-{model.name}")


if __name__ == "__main__":
    main()
