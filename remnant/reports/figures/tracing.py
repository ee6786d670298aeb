"""Figures of causal tracing and cross-model patching, drawn from their `Result`s only."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from remnant.tracing import (
    SITE_LABELS,
    SITES,
    TOKEN_CLASSES,
    CausalTraceResult,
    ModelDiffResult,
)

_CMAPS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
_SCOPE_STYLE = {"all": ("all positions", "tab:blue"), "last": ("last token only", "tab:orange")}


def trace_heatmaps(result: CausalTraceResult, index: int = 0) -> Figure:
    """One fact: answer probability with the clean state restored at each (token, layer), for
    block outputs (one layer) and MLP / attention outputs (a window of layers centred there).
    Model tokens are starred; the storing peak is marked on the MLP panel."""
    fact = result.facts[index]
    start, end = fact["subject_span"]
    labels = [
        repr(tok)[1:-1] + (" *" if start <= k < end else "") for k, tok in enumerate(fact["tokens"])
    ]
    window = result.settings["window"]
    fig = Figure(figsize=(13, 1.6 + 0.22 * len(labels)), layout="constrained")
    axes = fig.subplots(1, len(SITES), sharey=True)
    for ax, site in zip(axes, SITES):
        image = ax.imshow(np.asarray(fact["scores"][site]), aspect="auto", cmap=_CMAPS[site])
        ax.set_title(f"restored {SITE_LABELS[site]}")
        ax.set_xlabel("layer" if site == "resid" else f"centre of {window}-layer window")
        fig.colorbar(image, ax=ax, label=f"p({fact['answer_token']!r})", shrink=0.8)
    if result.storing_peak is not None:
        axes[1].axvline(result.storing_peak, color="black", lw=0.8, ls="--")
    axes[0].set_yticks(range(len(labels)), labels, fontsize=7)
    fig.suptitle(
        f"{fact['question']} → {fact['answer']}  (clean p={fact['clean_prob']:.3g}, "
        f"corrupted p={fact['corrupted_prob']:.3g}, noise std {result.noise_std:.3g})"
    )
    return fig


def trace_average(result: CausalTraceResult) -> Figure:
    """Mean indirect effect (restored - corrupted answer probability) by token class and
    layer over the traced facts, per site; the storing layers are boxed on the MLP panel."""
    classes = [c for c in TOKEN_CLASSES if result.average["resid"][c]["n_facts"]]
    fig = Figure(figsize=(13, 3.2), layout="constrained")
    axes = fig.subplots(1, len(SITES), sharey=True)
    for ax, site in zip(axes, SITES):
        effect = np.array([result.average[site][c]["mean"] for c in classes])
        image = ax.imshow(effect, aspect="auto", cmap=_CMAPS[site])
        ax.set_title(f"{SITE_LABELS[site]}: mean indirect effect")
        ax.set_xlabel("layer")
        fig.colorbar(image, ax=ax, shrink=0.8)
    if result.storing_layers:
        row = classes.index("last_subject")
        low, high = result.storing_layers[0], result.storing_layers[-1]
        axes[1].add_patch(
            Rectangle(
                (low - 0.5, row - 0.5), high - low + 1, 1, edgecolor="black", fill=False, lw=1.5
            )
        )
    axes[0].set_yticks(
        range(len(classes)),
        [f"{c.replace('_', ' ')} (n={result.average['resid'][c]['n_facts']})" for c in classes],
    )
    fig.suptitle(f"Causal tracing, {result.model['name']} on {result.target}")
    return fig


def diff_curves(result: ModelDiffResult, normalised: bool = True) -> Figure:
    """Per-layer cross-model patching curves with bootstrap CI bands. Top row: original
    activations patched into the unlearned model (restore); bottom: the reverse (destroy).
    ``normalised``: fraction of the probability gap moved toward the donor model; otherwise the
    raw answer probability, with both models' unpatched means as dotted lines. Where only some
    layers' patches were run (a screen), dots mark them; the curve between is estimated."""
    key = "fraction" if normalised else "patched"
    fig = Figure(figsize=(13, 6.5), layout="constrained")
    axes = fig.subplots(2, len(SITES), sharex=True, sharey=True)
    layers = np.arange(result.n_layers)
    for row, direction in enumerate(("restore", "destroy")):
        for col, site in enumerate(SITES):
            ax = axes[row, col]
            for scope, (label, colour) in _SCOPE_STYLE.items():
                curve = result.curve(direction, site, scope)
                if curve[f"{key}_mean"][0] is None:
                    continue
                run = curve["layers_run"]
                ax.plot(layers, curve[f"{key}_mean"], color=colour, label=label, marker="o",
                        ms=3, markevery=run if len(run) < len(layers) else [])  # fmt: skip
                low, high = np.array(curve[f"{key}_ci"], dtype=float).T
                ax.fill_between(layers, low, high, color=colour, alpha=0.2, lw=0)
            if normalised:
                ax.axhline(0, color="grey", lw=0.6)
                ax.axhline(1, color="grey", lw=0.6)
            else:
                ax.axhline(result.original_prob["mean"], color="black", ls=":", label="original")
                ax.axhline(result.unlearned_prob["mean"], color="red", ls=":", label="unlearned")
            for layer in result.storing_layers or []:
                ax.axvspan(layer - 0.5, layer + 0.5, color="gold", alpha=0.25, lw=0)
            ax.set_title(f"{direction}: patch {SITE_LABELS[site]}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row == 1:
                ax.set_xlabel("layer")
        axes[row, 0].set_ylabel(
            ("fraction restored" if direction == "restore" else "fraction destroyed")
            if normalised
            else "p(answer)"
        )
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        f"{result.unlearned['name']} vs {result.original['name']} on {result.target}: "
        f"{result.n_affected} of {len(result.facts)} facts' answer probability dropped by ≥ "
        f"{result.settings['min_drop']:.0%} (storing layers shaded)"
    )
    return fig
