"""Greedy decoding: the plain twin with rows leaving when done, against decoding through the
bridge with Hugging Face's ``generate`` (what remnant did before), on an audit's own prompts.

The prompts are every generation the ``in_context`` and ``reasoning`` attacks ask of the
original model under an audit config (``quick`` by default), recorded without generating. Each
arm generates all of them afresh (nothing kept), in the attacks' batch size, and must produce
the same texts:

- ``bridge + generate``: through the TransformerLens bridge (its attention expands the grouped
  keys and values for every query head at every step), with ``generate``, which steps every row
  until the batch's longest is done;
- ``bridge, rows leave``: remnant's greedy loop, through the bridge;
- ``twin, rows leave``: remnant's greedy loop through the plain SDPA twin (the default).

Usage: ``python bench/decoding.py [--config quick]``; writes
``bench/results/decoding-{model}.md``.
"""

from __future__ import annotations

import time
from unittest import mock

from common import bench_parser, model_and_target, publish

from remnant.attacks import in_context, reasoning
from remnant.audit.config import load_config
from remnant.models.accounting import TOKENS
from remnant.scoring import generation
from remnant.scoring.batching import SharedPrefix, length_batches


def recorded_calls(model, target, config) -> list[tuple[list[list[int]], int, int]]:
    """(prompt ids, max new tokens, batch size) of every generation the two attacks ask for."""
    calls = []

    def record(model, prompt_ids, *, max_new_tokens=32, batch_size=64, edit=None):
        calls.append(([list(p) for p in prompt_ids], max_new_tokens, batch_size))
        return [""] * len(prompt_ids)

    with mock.patch("remnant.attacks.protocol.generate", record):
        for attack in (in_context, reasoning):
            settings = config.stage_settings(attack.__name__.rsplit(".", 1)[1])
            attack.run(model, model, target, settings)
    return calls


def generate_continuations(model, prompt_ids, needs, batch_size, edit=None):
    """Before: Hugging Face ``generate`` through the bridge, every row stepped until the
    batch's longest is done (the shared prefix reused as remnant does)."""
    eos = set(generation._eos_ids(model))
    out = [([], False)] * len(prompt_ids)
    prefix = SharedPrefix(model, prompt_ids)
    for batch in length_batches([len(p) for p in prompt_ids], batch_size):
        ids, mask = prefix.padded([prompt_ids[i] for i in batch])
        generated = model.hf_model.generate(
            input_ids=ids,
            attention_mask=mask,
            past_key_values=prefix.past(len(batch)),
            max_new_tokens=max(needs[i] for i in batch),
            do_sample=False,
            pad_token_id=model.tokenizer.pad_token_id,
        )[:, ids.shape[1] :]
        for row, i in enumerate(batch):
            tokens = generated[row].tolist()
            end = next((k for k, token in enumerate(tokens) if token in eos), None)
            out[i] = (tokens, False) if end is None else (tokens[:end], True)
    return out


def run_arm(model, calls) -> tuple[float, int, list[list[str]]]:
    generation.GENERATIONS.clear()
    counted, started = TOKENS.snapshot(), time.perf_counter()
    texts = [
        generation.generate(model, ids, max_new_tokens=new, batch_size=size)
        for ids, new, size in calls
    ]
    return time.perf_counter() - started, TOKENS.since(counted)["forward"], texts


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--config", default="quick", help="audit config of the attacks")
    args = parser.parse_args()
    model, target = model_and_target(args)
    calls = recorded_calls(model, target, load_config(args.config))
    twin = model.decoder
    rows = []
    with mock.patch.object(generation, "_continuations", generate_continuations):
        rows.append(("bridge + generate", *run_arm(model, calls)))
    model.decoder = None
    rows.append(("bridge, rows leave", *run_arm(model, calls)))
    model.decoder = twin
    rows.append(("twin, rows leave", *run_arm(model, calls)))
    base_seconds, base_tokens, base_texts = rows[0][1:]
    prompts = sum(len(ids) for ids, _, _ in calls)
    prompt_tokens = sum(len(p) for ids, _, _ in calls for p in ids)
    lines = [
        f"# Greedy decoding ({model.name}, target {target.name!r}, config {args.config!r})",
        "",
        f"`python bench/decoding.py --model {args.model} --config {args.config}`",
        "",
        f"{len(calls)} generation calls of the in_context and reasoning attacks, {prompts} "
        f"prompts ({prompt_tokens} prompt tokens), "
        f"{', '.join(sorted({str(new) for _, new, _ in calls}))} new tokens at most.",
        "",
        "| arm | wall (s) | forward tokens | wall ratio | token ratio | same texts |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, seconds, tokens, texts in rows:
        lines.append(
            f"| {name} | {seconds:.1f} | {tokens} | {seconds / base_seconds:.2f} | "
            f"{tokens / base_tokens:.2f} | {'yes' if texts == base_texts else 'NO'} |"
        )
    publish(lines, f"decoding-{model.name}")


if __name__ == "__main__":
    main()
