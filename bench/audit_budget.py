"""Audit budget: per stage of a demo-sized audit, its wall time, the tokens it pushed through
the models (`remnant.models.accounting`: forward, and of those with gradients), its floor and
the ratio of the two.

The floor is what the stage's tokens cost at the rates this machine reaches on plain batched
work, measured in the same run on the same model: a forward of 16 rows x 32 tokens without
gradients (tokens/s), and a forward plus backward of 8 x 32 tokens (tokens/s). A stage's floor is
its gradient-free tokens over the first rate plus its gradient tokens over the second; the
ratio (wall / floor) is how far the stage is from pushing only the tokens it pushed, at full
speed (1.0: no overhead; decoding one token at a time, small batches and Python between
forwards all show up as a ratio above 1). Every stage is computed afresh (the output folder is
emptied first); the unlearned checkpoints come from the cache (`cached_run`) and are not
counted. Also prints the process's peak resident memory.

Usage: ``python bench/audit_budget.py [--model smollm2-135m-instruct] [--methods npo]
[--config quick] [--out DIR]``; writes ``bench/results/audit-budget-{model}.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shutil
import statistics
import time
from pathlib import Path

import torch
from common import publish

from remnant.audit.demo import demo
from remnant.models import Model, load_model
from remnant.models.cache import remnant_home


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def rates(model: Model) -> dict[str, float]:
    """Tokens per second of a plain batched forward (16 x 32, no gradients) and of a forward
    plus backward (8 x 32) through ``model``'s Hugging Face model."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.hf_model.config.vocab_size
    forward_ids = torch.randint(vocab, (16, 32), generator=generator)
    train_ids = torch.randint(vocab, (8, 32), generator=generator)

    def forward() -> None:
        with torch.no_grad():
            model.hf_model(input_ids=forward_ids, use_cache=False)

    def train() -> None:
        model.hf_model(input_ids=train_ids, use_cache=False).logits.float().mean().backward()
        model.hf_model.zero_grad(set_to_none=True)

    return {
        "forward": forward_ids.numel() / _median_seconds(forward),
        "forward_backward": train_ids.numel() / _median_seconds(train),
    }


def budget_table(timings: dict, measured: dict[str, float]) -> tuple[list[list[str]], dict]:
    """Rows per stage (id, seconds, forward tokens, gradient tokens, floor, ratio) and totals."""
    rows, totals = [], {"seconds": 0.0, "forward": 0, "backward": 0, "floor": 0.0}
    for stage, seconds in timings["stages"].items():
        tokens = timings["tokens"].get(stage)
        if seconds is None or tokens is None:
            continue
        plain = tokens["forward"] - tokens["backward"]
        floor = plain / measured["forward"] + tokens["backward"] / measured["forward_backward"]
        ratio = f"{seconds / floor:.1f}" if floor > 0 else "n/a"
        rows.append([stage, f"{seconds:.1f}", str(tokens["forward"]), str(tokens["backward"]),
                     f"{floor:.1f}", ratio])  # fmt: skip
        totals["seconds"] += seconds
        totals["forward"] += tokens["forward"]
        totals["backward"] += tokens["backward"]
        totals["floor"] += floor
    return rows, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--target", default="demo")
    parser.add_argument("--methods", default="npo", help="unlearning methods, comma-separated")
    parser.add_argument("--config", default="quick")
    parser.add_argument("--out", type=Path, default=None, help="audit folder (emptied first)")
    args = parser.parse_args()
    out = args.out or remnant_home() / "bench" / f"audit-budget-{args.model}"
    shutil.rmtree(out, ignore_errors=True)
    measured = rates(load_model(args.model))
    print(f"plain forward {measured['forward']:.0f} tokens/s, forward+backward "
          f"{measured['forward_backward']:.0f} tokens/s", flush=True)  # fmt: skip
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []  # (stage id or "done", seconds since start)

    def on_start(stage_id: str, index: int, count: int) -> None:
        marks.append((stage_id, time.perf_counter() - started))
        print(f"{marks[-1][1]:7.1f} s: {stage_id} ({index + 1}/{count})", flush=True)

    def on_done(record: dict) -> None:
        marks.append(("done", time.perf_counter() - started))

    demo(out, model=args.model, target=args.target, methods=args.methods.split(","),
         config=args.config, on_start=on_start, on_done=on_done)  # fmt: skip
    wall = time.perf_counter() - started
    timings = json.loads((out / "timings.json").read_text())
    rows, totals = budget_table(timings, measured)
    around = sum(done[1] - begun[1] for begun, done in zip(marks[::2], marks[1::2]))
    outside = (
        f"outside the stages' own times: {marks[0][1]:.0f} s before the first (loading the "
        f"models), {around - totals['seconds']:.0f} s around them (stage keys and records), "
        f"{wall - marks[-1][1]:.0f} s after the last (verdicts, report)"
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = ["stage", "wall (s)", "forward tokens", "with gradients", "floor (s)", "wall/floor"]
    lines = [
        f"# Audit budget: {args.model}, target {args.target}, methods {args.methods}, "
        f"config {args.config}",
        "",
        f"Command: `python bench/audit_budget.py --model {args.model} --methods {args.methods} "
        f"--config {args.config}`  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Rates measured in this run: plain forward {measured['forward']:.0f} tokens/s (16 x 32), "
        f"forward + backward {measured['forward_backward']:.0f} tokens/s (8 x 32)  ",
        f"Audit wall time {wall:.0f} s (stages {totals['seconds']:.0f} s; the rest loads models "
        f"and writes the report); peak resident memory {peak_mib:.0f} MiB  ",
        outside[0].upper() + outside[1:],
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
        f"| total | {totals['seconds']:.1f} | {totals['forward']} | {totals['backward']} | "
        f"{totals['floor']:.1f} | {totals['seconds'] / totals['floor']:.1f} |",
    ]
    publish(lines, f"audit-budget-{args.model}")


if __name__ == "__main__":
    main()
