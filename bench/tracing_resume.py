"""Exact causal tracing on the full ROME protocol, resumed at each restoration's first block
and position (the tracer now) against resumed at its first position only (the tracer before),
side by side on the same cells of the same facts.

Per fact (the first ``--facts`` demo forget facts, each at the position where the model states
its answer, as the audit traces it): every restoration from the subject's first token on (block
output at one layer, MLP and attention outputs over a window of 10 layers; 10 noise samples) is
run both ways through `remnant.tracing.patching.patched_probs`. Prints per fact and in total
the wall time and forward tokens of each arm, their ratio, and the largest score difference
(must be below 1e-5). Writes ``bench/results/tracing-resume-{model}.md``.

    python bench/tracing_resume.py [--facts 3] [--samples 10] [--threads N]
"""

from __future__ import annotations

import datetime
import time

import torch
from common import bench_parser, model_and_target, publish

from remnant.models.accounting import TOKENS
from remnant.probes.activations import encode_with_subject_spans
from remnant.scoring import answer_contexts, resolve_style
from remnant.tracing import TraceSettings
from remnant.tracing.causal_trace import corruption_noise, embedding_std, trace_rows
from remnant.tracing.patching import Corruption, PreparedPrompt, all_site_hooks, patched_probs


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--facts", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    model, target = model_and_target(args)
    settings = TraceSettings(n_samples=args.samples)
    style = resolve_style(model, settings.prompt_style)
    noise_std = settings.noise_multiplier * embedding_std(model, target, style)
    items = target.forget[: args.facts]
    contexts = answer_contexts(model, items, style)
    header = ["fact", "tokens", "cells", "before (s)", "now (s)", "ratio", "tokens before",
              "tokens now", "max |diff|"]  # fmt: skip
    rows, totals, worst = [], {"before": 0.0, "now": 0.0, "tb": 0, "tn": 0, "cells": 0}, 0.0
    for item, context in zip(items, contexts):
        (prompt,) = encode_with_subject_spans(model, [item.question], [item.subject], style)
        start, end = prompt.subject_span
        noise = corruption_noise(item.question, settings.n_samples, end - start, model.d_model,
                                 noise_std, settings.seed)  # fmt: skip
        prepared = PreparedPrompt(
            model, context.ids, all_site_hooks(model), Corruption(noise, start)
        )
        cells = trace_rows(len(context.ids), start, model.n_layers, settings.n_samples,
                           settings.window)  # fmt: skip
        arms = {}
        for arm, from_first_block in (("before", True), ("now", False)):
            before, started = TOKENS.snapshot(), time.perf_counter()
            probs = patched_probs(prepared, cells, prepared.acts, context.answer_id,
                                  from_first_block=from_first_block)  # fmt: skip
            arms[arm] = (probs, time.perf_counter() - started, TOKENS.since(before)["forward"])
        gap = float((arms["before"][0] - arms["now"][0]).abs().max())
        worst = max(worst, gap)
        (_, s_before, t_before), (_, s_now, t_now) = arms["before"], arms["now"]
        n_cells = len(cells) // settings.n_samples
        rows.append([repr(item.question), str(len(context.ids)), str(n_cells),
                     f"{s_before:.1f}", f"{s_now:.1f}", f"{s_before / s_now:.2f}", str(t_before),
                     str(t_now), f"{gap:.1e}"])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
        totals["before"] += s_before
        totals["now"] += s_now
        totals["tb"] += t_before
        totals["tn"] += t_now
        totals["cells"] += n_cells
    lines = [
        f"# Exact tracing resumed at the first block: {args.model}, target {target.name}",
        "",
        f"Command: `python bench/tracing_resume.py --facts {args.facts} --samples "
        f"{args.samples}`  ",
        f"Date: {datetime.date.today().isoformat()}; {torch.get_num_threads()} torch threads  ",
        f"Protocol: {settings.n_samples} noise samples, window {settings.window}, block / MLP / "
        "attention sites, every token from the subject's first on (earlier ones are clean in "
        "every corrupted run)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
        f"| total | | {totals['cells']} | {totals['before']:.1f} | {totals['now']:.1f} | "
        f"{totals['before'] / totals['now']:.2f} | {totals['tb']} | {totals['tn']} | "
        f"{worst:.1e} |",
        "",
        f"Scores equal within {worst:.1e} (must be < 1e-5); wall-time ratio "
        f"{totals['before'] / totals['now']:.2f}, token ratio {totals['tb'] / totals['tn']:.2f}.",
    ]
    publish(lines, f"tracing-resume-{args.model}")
    assert worst < 1e-5


if __name__ == "__main__":
    main()
