"""How well the attribution screen (`TraceSettings.method="attribution"`) agrees with exact
causal tracing, fact by fact, on the same facts, noise samples and cells.

Runs `remnant.tracing.causal_trace.run` twice on the first ``--facts`` known forget facts of the
target (SmolLM2-135M-Instruct and the demo target by default), exact and by attribution, and
prints per fact and site, over the cells from the subject's first token on: the Spearman rank
correlation of the indirect effects, the overlap of the 10 largest cells, and whether the MLP
effect at the last subject token peaks at the same layer (within one); then the storing
layers each method finds over all facts, and both wall times. With ``--unlearned METHOD``
(a reference unlearning method, its checkpoint made once and cached as `remnant demo` makes
it), the same for cross-model patching (`remnant.tracing.model_diff`): per direction, site
and scope, the median over facts of the Spearman correlation of the per-layer patched
probabilities and how often both peak at the same layer (within one). Writes
``bench/results/tracing-attribution-{model}.md``.

    python bench/tracing_attribution.py [--model smollm2-135m-instruct] [--target demo]
        [--facts 10] [--samples 10] [--unlearned npo] [--threads N]
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import time

import numpy as np
import torch
from common import bench_parser, model_and_target, publish, unlearned_model
from scipy.stats import spearmanr

from remnant.models.accounting import TOKENS
from remnant.tracing import SITES, DiffSettings, TraceSettings, causal_trace, model_diff
from remnant.tracing.causal_trace import token_classes
from remnant.tracing.model_diff import DIRECTIONS, SCOPES

TOP = 10


def effects(fact: dict, site: str) -> np.ndarray:
    """Indirect effects (restored - corrupted) of the cells from the subject's first token on."""
    start = fact["subject_span"][0]
    return np.asarray(fact["scores"][site])[start:] - fact["corrupted_prob"]


def mlp_peak(fact: dict) -> int:
    """Layer of the largest MLP effect at the last subject token."""
    last = token_classes(fact["subject_span"], len(fact["tokens"]))["last_subject"][0]
    return int(np.argmax(fact["scores"]["mlp"][last]))


def cost_line(seconds: dict[str, float], tokens: dict[str, dict[str, int]]) -> str:
    """Wall time and tokens of both methods (the tokens include choosing the known facts)."""
    parts = [
        f"{how} {seconds[how]:.0f} s, {tokens[how]['forward']} forward tokens "
        f"({tokens[how]['backward']} of them with a backward pass)"
        for how in ("exact", "attribution")
    ]
    return (
        f"Cost: {'; '.join(parts)}; wall-time ratio "
        f"{seconds['exact'] / seconds['attribution']:.1f}."
    )


def patching_agreement(model, target, method: str, n_facts: int) -> list[str]:
    """Lines of the cross-model patching comparison against ``method``'s unlearned model."""
    unlearned = unlearned_model(model, target, method)
    patched, seconds, tokens = {}, {}, {}
    for how in ("attribution", "exact"):
        started, counted = time.perf_counter(), TOKENS.snapshot()
        patched[how] = model_diff.run(
            model, unlearned, target, DiffSettings(max_facts=n_facts, method=how)
        )
        seconds[how] = time.perf_counter() - started
        tokens[how] = TOKENS.since(counted)
    exact, estimate = patched["exact"], patched["attribution"]
    lines = [
        "",
        f"## Cross-model patching, original vs {method} ({len(exact.facts)} facts)",
        "",
        cost_line(seconds, tokens),
        "",
        "| direction | site | scope | median Spearman rho over layers | same peak layer "
        "(within 1) |",
        "|---|---|---|---:|---:|",
    ]
    for direction in DIRECTIONS:
        for site in SITES:
            for scope in SCOPES:
                rhos, same = [], 0
                for ours, theirs in zip(estimate.facts, exact.facts, strict=True):
                    a = np.asarray(theirs["patched"][direction][site][scope])
                    b = np.asarray(ours["patched"][direction][site][scope])
                    rhos.append(float(spearmanr(a, b).statistic))
                    same += abs(int(a.argmax()) - int(b.argmax())) <= 1
                lines.append(
                    f"| {direction} | {site} | {scope} | {np.nanmedian(rhos):.2f} | "
                    f"{same} of {len(exact.facts)} |"
                )
    return lines


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--facts", type=int, default=10, help="known facts traced")
    parser.add_argument("--samples", type=int, default=10, help="noise samples per fact")
    parser.add_argument("--unlearned", default=None, help="also patching: ga, npo or rmu")
    args = parser.parse_args()
    model, target = model_and_target(args)
    exact_settings = TraceSettings(max_facts=args.facts, n_samples=args.samples)
    traced, seconds, tokens = {}, {}, {}
    for method in ("attribution", "exact"):
        started, counted = time.perf_counter(), TOKENS.snapshot()
        settings = dataclasses.replace(exact_settings, method=method)
        traced[method] = causal_trace.run(model, target, settings)
        seconds[method] = time.perf_counter() - started
        tokens[method] = TOKENS.since(counted)
    exact, estimate = traced["exact"], traced["attribution"]
    lines = [
        f"# Attribution screen vs exact causal tracing ({model.name}, target {target.name!r})",
        "",
        f"`python bench/tracing_attribution.py --model {args.model} --facts {args.facts} "
        f"--samples {args.samples}` on {datetime.date.today()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads. {len(exact.facts)} facts, {args.samples} noise samples, window "
        f"{exact_settings.window}; cells from the subject's first token on.",
        "",
        cost_line(seconds, tokens),
        "",
        "| fact | "
        + " | ".join(f"{s} rho | {s} top-{TOP}" for s in SITES)
        + " | MLP peak (last subject): exact / attribution |",
        "|---|" + "---:|---:|" * len(SITES) + "---|",
    ]
    rhos: dict[str, list[float]] = {site: [] for site in SITES}
    overlaps: dict[str, list[float]] = {site: [] for site in SITES}
    same_peak = 0
    for ours, theirs in zip(estimate.facts, exact.facts, strict=True):
        cells = []
        for site in SITES:
            a, b = effects(theirs, site).ravel(), effects(ours, site).ravel()
            rho = float(spearmanr(a, b).statistic)
            top = len(set(np.argsort(-a)[:TOP]) & set(np.argsort(-b)[:TOP])) / TOP
            rhos[site].append(rho)
            overlaps[site].append(top)
            cells.append(f"{rho:.2f} | {top:.1f}")
        peaks = mlp_peak(theirs), mlp_peak(ours)
        same_peak += abs(peaks[0] - peaks[1]) <= 1
        lines.append(
            f"| {theirs['question'][:40]} | " + " | ".join(cells) + f" | {peaks[0]} / {peaks[1]} |"
        )
    lines.append(
        "| **median** | "
        + " | ".join(f"{np.median(rhos[s]):.2f} | {np.median(overlaps[s]):.1f}" for s in SITES)
        + f" | same within 1 layer: {same_peak} of {len(exact.facts)} |"
    )
    lines += [
        "",
        f"Storing layers (mean MLP effect at the last subject token, band at half its peak): "
        f"exact peak {exact.storing_peak}, band {exact.storing_layers}; attribution peak "
        f"{estimate.storing_peak}, band {estimate.storing_layers}.",
    ]
    if args.unlearned:
        lines += patching_agreement(model, target, args.unlearned, args.facts)
    publish(lines, f"tracing-attribution-{args.model}")


if __name__ == "__main__":
    main()
