"""Causal tracing speed: the batched tracer (`remnant.tracing.trace_fact`) versus the ROME
structure, one forward call per (site, token, layer) cell with the noise samples as its batch,
on SmolLM2-135M-Instruct for the first ``n_facts`` demo facts.

To keep the run short the naive loop runs every ``layer_stride``-th layer of the cells the tracer
runs (tokens from the subject's first on; earlier tokens are clean in every corrupted run, so
restoring them is a no-op); each of its calls has the same shape, so its time per cell times the
tracer's cell count is its time for the whole grid. Checks that both give the same scores on
the shared cells (max |difference| printed, must be < 1e-4) and prints the speed ratio, plus
the ratio against ROME's full grid (every token).

    python bench/tracing_speed.py [n_facts] [n_samples] [layer_stride] [threads]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from remnant.models import load_model
from remnant.probes.activations import encode_with_subject_spans
from remnant.scoring import encode_answers, resolve_style
from remnant.targets import load_target
from remnant.tracing import SITES, TraceSettings, trace_fact
from remnant.tracing.causal_trace import corruption_noise, embedding_std
from remnant.tracing.patching import site_hooks


def naive_trace(
    model, item, noise_std: float, settings: TraceSettings, layer_stride: int
) -> np.ndarray:
    """Scores (site, token, layer) from one forward call per cell; NaN where not run."""
    style = resolve_style(model, settings.prompt_style)
    (prompt,) = encode_with_subject_spans(model, [item.question], [item.subject], style)
    answer = encode_answers(model, [item.answer], style)[0][0]
    start, end = prompt.subject_span
    n, n_layers = settings.n_samples, model.n_layers
    noise = corruption_noise(item.question, n, end - start, model.d_model, noise_std, settings.seed)
    tokens = torch.tensor([prompt.ids])
    with torch.no_grad():
        _, clean = model.bridge.run_with_cache(tokens)

    def corrupt(x, hook):
        x = x.clone()
        x[:, start:end] += noise
        return x

    scores = np.full((len(SITES), len(prompt.ids), n_layers), np.nan)
    for k, site in enumerate(SITES):
        names = site_hooks(model)[site]
        for t in range(start, len(prompt.ids)):
            for layer in range(0, n_layers, layer_stride):
                low = layer if site == "resid" else max(0, layer - settings.window // 2)
                high = layer + 1 if site == "resid" else layer - (-settings.window // 2)

                def restore(x, hook, t=t):
                    x = x.clone()
                    x[:, t] = clean[hook.name][0, t]
                    return x

                hooks = [("embed.hook_out", corrupt)] + [(m, restore) for m in names[low:high]]
                with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
                    logits = model.hf_model(tokens.expand(n, -1), logits_to_keep=1).logits
                scores[k, t, layer] = float(torch.softmax(logits[:, -1], -1)[:, answer].mean())
    return scores


def main(
    n_facts: int = 2, n_samples: int = 5, layer_stride: int = 5, threads: int | None = None
) -> None:
    if threads:
        torch.set_num_threads(threads)
    model = load_model("smollm2-135m-instruct")
    target = load_target("demo")
    settings = TraceSettings(n_samples=n_samples)
    noise_std = settings.noise_multiplier * embedding_std(
        model, target, resolve_style(model, "auto")
    )
    batched_s = naive_s = worst = 0.0
    naive_cells = traced_cells = full_grid = 0
    for item in target.forget[:n_facts]:
        started = time.perf_counter()
        fact = trace_fact(model, item, item.subject, noise_std, settings)
        batched_s += time.perf_counter() - started
        started = time.perf_counter()
        naive = naive_trace(model, item, noise_std, settings, layer_stride)
        naive_s += time.perf_counter() - started
        ran = ~np.isnan(naive)
        batched = np.array([fact["scores"][site] for site in SITES])
        worst = max(worst, float(np.abs(batched[ran] - naive[ran]).max()))
        naive_cells += int(ran.sum())
        start = fact["subject_span"][0]
        traced_cells += batched[:, start:].size
        full_grid += batched.size
        print(
            f"{item.question!r}: {len(fact['tokens'])} tokens, tracer ran "
            f"{batched[:, start:].size} cells"
        )
    per_cell = naive_s / naive_cells
    print(f"{n_facts} facts, {n_samples} noise samples, {torch.get_num_threads()} threads")
    print(f"batched tracer: {batched_s:.1f} s for {traced_cells} cells")
    print(f"one forward per cell: {naive_s:.1f} s for {naive_cells} cells ({per_cell:.3f} s/cell)")
    print(f"max |score difference| on shared cells = {worst:.2e} (must be < 1e-4)")
    print(f"speed ratio (same cells): {per_cell * traced_cells / batched_s:.1f}x")
    print(f"speed ratio vs ROME's full grid (every token): {per_cell * full_grid / batched_s:.1f}x")
    assert worst < 1e-4


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
