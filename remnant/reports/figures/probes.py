"""Figures of the linear probes and the logit lens, drawn from their `Result`s only."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from remnant.probes.lens import LensResult
from remnant.probes.linear import ProbeResult

_MODELS = {"original": "tab:blue", "unlearned": "tab:red"}
_TITLES = {
    "truth": "true vs false statements",
    "recall": "which answer (read before it)",
    "mcq": "multiple-choice answer",
    "concept": "concept text vs unrelated text (not knowledge)",
}


def probe_accuracy(result: ProbeResult) -> Figure:
    """Held-out probe accuracy per layer, one panel per task: original and unlearned with 95%
    bootstrap bands, the original's probe applied to the unlearned model (transfer, dashed), the
    permuted-label control (shaded band) and chance (dotted)."""
    tasks = list(result.tasks)
    fig = Figure(figsize=(4.6 * len(tasks), 3.6), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        scores = result.tasks[task]
        layers = np.arange(len(result.layers))
        for model, colour in _MODELS.items():
            curve = scores[model]
            ci = np.asarray(curve["ci"], dtype=float)
            ax.plot(layers, curve["accuracy"], color=colour, marker=".", label=model)
            ax.fill_between(layers, ci[:, 0], ci[:, 1], color=colour, alpha=0.15, lw=0)
            control = np.asarray(curve["control_ci"], dtype=float)
            ax.fill_between(layers, control[:, 0], control[:, 1], color="grey", alpha=0.12, lw=0)
        ax.plot(
            layers, scores["transfer"]["accuracy"], color="tab:green", ls="--", label="transfer"
        )
        ax.axhline(scores["chance"], color="black", ls=":", lw=1, label="chance")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("held-out accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{_TITLES.get(task, task)}\n{scores['n_items']} items", fontsize=10)
    handles, _ = axes[0].get_legend_handles_labels()
    control = Patch(color="grey", alpha=0.3, label="shuffled-label control (95% CI)")
    fig.legend(handles=[*handles, control], loc="outside lower center", ncol=6, fontsize=8)
    fig.suptitle(
        f"Linear probes: {result.original['name']} vs {result.unlearned['name']} on {result.target}"
    )
    return fig


def lens_ranks(result: LensResult) -> Figure:
    """Logit lens per layer: rank of the first answer token (1 = top, log scale; thin lines are
    single items, thick the median, dashed the median rank of the other answers of each item's
    kind: the lens's control) and the fraction of items where it ranks first."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    rank_ax, top_ax = fig.subplots(1, 2)
    layers = np.arange(len(result.layers))
    for model, colour in _MODELS.items():
        for item in result.items:
            rank_ax.plot(layers, item[f"{model}_rank"], color=colour, alpha=0.12, lw=0.7)
        curves = result.by_layer[model]
        rank_ax.plot(layers, curves["median_rank"], color=colour, lw=2.2, label=model)
        control = [np.nan if r is None else r for r in curves["median_control_rank"]]
        rank_ax.plot(layers, control, color=colour, lw=1.2, ls="--",
                     label=f"{model}: other answers of the kind")  # fmt: skip
        top_ax.plot(layers, curves["top1"], color=colour, marker=".", label=model)
    rank_ax.set_yscale("log")
    rank_ax.set_ylabel("rank of first answer token (1 = top)")
    top_ax.set_ylabel("fraction of items ranked first")
    top_ax.set_ylim(-0.02, 1.02)
    for ax in (rank_ax, top_ax):
        ax.set_xlabel("layer (0 = embeddings)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Logit lens on {len(result.items)} forget items: {result.original['name']} vs "
        f"{result.unlearned['name']} ({result.target})"
    )
    return fig
