"""Figures of the attacks that try to bring forgotten knowledge back, drawn from their
`AttackResult`s only."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from remnant.attacks.embedding import EmbeddingResult
from remnant.attacks.protocol import BASELINE, ROLES, AttackResult
from remnant.attacks.quantize import QuantizeResult
from remnant.attacks.relearn import RelearnResult

_COLOURS = {"original": "tab:blue", "unlearned": "tab:red", "gold": "tab:green"}
#: Curve markers by role (the gold model's hollow, so a curve it covers stays visible).
_MARKERS = {"original": "o", "unlearned": "s", "gold": "^"}
_K_SHOT = "k-shot"


def attack_bars(result: AttackResult) -> Figure:
    """Held-out accuracy per condition, one bar per model (original, unlearned and, when given,
    gold) with its 95% bootstrap CI; a dotted line over a condition marks its chance level when
    guessing scores above 0."""
    roles = [role for role in ROLES if role in result.models]
    conditions = result.conditions
    fig = Figure(figsize=(max(5.0, 1.0 + 1.1 * len(conditions)), 4.0), layout="constrained")
    ax = fig.subplots()
    centres = np.arange(len(conditions))
    labels = [f"{c['name']}\nn={c['scores']['unlearned']['n']}" for c in conditions]
    scores = {role: [c["scores"][role] for c in conditions] for role in roles}
    _bars_on(ax, scores, labels, result.models)
    for centre, condition in zip(centres, conditions):
        if condition["chance"] > 0:
            ax.hlines(condition["chance"], centre - 0.45, centre + 0.45, colors="black", ls=":")
    ax.set_ylabel("held-out accuracy (95% CI)")
    handles, _ = ax.get_legend_handles_labels()
    if any(c["chance"] > 0 for c in conditions):
        handles.append(Line2D([], [], color="black", ls=":", label="chance"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    ax.set_title(
        f"{result.attack}: {len(result.split['held_out'])} held-out forget items of "
        f"{result.target}",
        fontsize=10,
    )
    return fig


def k_shot_curve(result: AttackResult) -> Figure:
    """Held-out accuracy against the number k of fit-split demonstrations (k = 0 is the plain
    question), per model with 95% bootstrap bands; dashed lines mark each model's accuracy after
    demonstrations of unrelated facts, which teach the answer format only."""
    shots = {BASELINE: 0} | {
        c["name"]: int(c["name"].split("=", 1)[1])
        for c in result.conditions
        if c["category"] == _K_SHOT
    }
    curve = sorted(
        (c for c in result.conditions if c["name"] in shots), key=lambda c: shots[c["name"]]
    )
    unrelated = [c for c in result.conditions if c["category"] == "unrelated"]
    ks = np.array([shots[c["name"]] for c in curve])
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for role in (role for role in ROLES if role in result.models):
        _band(ax, list(ks), [c["scores"][role] for c in curve], role)
        for condition in unrelated:
            accuracy = condition["scores"][role]["accuracy"]
            ax.axhline(accuracy, color=_COLOURS[role], ls="--", lw=1)
    handles, _ = ax.get_legend_handles_labels()
    if unrelated:
        handles.append(Line2D([], [], color="grey", ls="--", label="unrelated demonstrations"))
    if curve[0]["chance"] > 0:
        ax.axhline(curve[0]["chance"], color="black", ls=":", lw=1)
        handles.append(Line2D([], [], color="black", ls=":", label="chance"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    ax.set_xticks(ks)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("demonstrations from the fit split (k; 0 = plain question)")
    ax.set_ylabel("held-out accuracy (95% CI)")
    ax.set_title(
        f"In-context k-shot: {result.models['unlearned']['name']} vs "
        f"{result.models['original']['name']} on {result.target}",
        fontsize=10,
    )
    return fig


def _accuracies(
    conditions: list[dict[str, Any]], role: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per condition, ``role``'s accuracy and CI ends (NaN where the condition has no items)."""
    scores = [c["scores"][role] for c in conditions]
    values = np.array([[s["accuracy"], *s["ci"]] for s in scores], dtype=float).reshape(-1, 3)
    return values[:, 0], values[:, 1], values[:, 2]


def relearn_curves(result: RelearnResult) -> Figure:
    """Held-out forget accuracy against relearning steps, one panel per kind of training data,
    one curve per model with its 95% bootstrap band."""
    curves = result.curves
    fig = Figure(figsize=(4.2 * len(curves), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(curves), sharey=True))
    for ax, curve in zip(axes, curves):
        for role in (role for role in ROLES if role in curve["points"]):
            points = curve["points"][role]
            steps = [p["step"] for p in points]
            _band(ax, steps, points, role)
        verdict = "recovered" if curve["recovered"] else "not recovered"
        ax.set_title(f"{curve['data']} ({curve['n_examples']} examples): {verdict}", fontsize=9)
        ax.set_xlabel("relearning steps")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("held-out forget accuracy (95% CI)")
    handles, _ = axes[0].get_legend_handles_labels()
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(
        f"Relearning {result.models['unlearned']['name']} on {result.target} "
        f"(recovery above: {result.line})",
        fontsize=10,
    )
    return fig


def noise_curves(result: EmbeddingResult) -> Figure:
    """Forget accuracy against the scale of the noise on the question's input embeddings:
    mean over draws (solid, 95% CI band) and best of n draws (dashed), per model."""
    assert result.noise is not None
    scales = result.noise["scales"]
    x = [s["scale"] for s in scales]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for role in (role for role in ROLES if role in result.models):
        _band(ax, x, [s["roles"][role]["mean"] for s in scales], role)
        best = [s["roles"][role]["best_of_n"]["accuracy"] for s in scales]
        ax.plot(x, best, color=_COLOURS[role], ls="--", lw=1)
    handles, _ = ax.get_legend_handles_labels()
    n = result.settings["n_samples"]
    handles.append(Line2D([], [], color="grey", ls="--", label=f"best of {n} draws"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("noise scale (σ in units of the embedding matrix's RMS entry)")
    ax.set_ylabel(f"forget accuracy, n={result.noise['n']} (95% CI)")
    ax.set_title(f"Embedding noise on {result.target}", fontsize=10)
    return fig


def soft_prompt_bars(result: EmbeddingResult) -> Figure:
    """Held-out accuracy per model: plain, after the soft prompt optimised on the fit answers,
    and after its control optimised on permuted answers (what the optimisation invents)."""
    assert result.soft_prompt is not None
    roles = result.soft_prompt["roles"]
    conditions = ("plain", "attack", "control")
    return _grouped_bars(
        {role: [roles[role][c] for c in conditions] for role in ROLES if role in roles},
        ["plain", "soft prompt", "control\n(permuted answers)"],
        "held-out accuracy (95% CI)",
        f"Soft prompt ({result.settings['soft_tokens']} vectors) on {result.target}",
        result.models,
    )


def quantize_bars(result: QuantizeResult) -> Figure:
    """Forget (left) and retain (right) accuracy per quantization condition, one bar per model
    with its 95% bootstrap CI."""
    fig = Figure(figsize=(max(7.0, 2.4 * len(result.conditions)), 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    labels = [c["name"].replace(" ", "\n", 1) for c in result.conditions]
    for ax, split in zip(axes, ("forget", "retain")):
        scores = {
            role: [c["scores"][role][split] for c in result.conditions]
            for role in ROLES
            if role in result.models
        }
        if any(s is None for values in scores.values() for s in values):
            ax.set_title(f"{split}: no items", fontsize=9)
            continue
        _bars_on(ax, scores, labels, result.models)
        ax.set_title(f"{split} items", fontsize=9)
    axes[0].set_ylabel("accuracy (95% CI)")
    handles, _ = axes[0].get_legend_handles_labels()
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, len(handles)), fontsize=8)
    fig.suptitle(
        f"Round-to-nearest quantization (group {result.settings['group_size']}) on {result.target}",
        fontsize=10,
    )
    return fig


def _band(ax: Any, x: list[float], points: list[dict[str, Any]], role: str) -> None:
    """One model's accuracy curve with its CI band."""
    values = np.array([[p["accuracy"], *p["ci"]] for p in points], dtype=float).reshape(-1, 3)
    colour = _COLOURS[role]
    ax.plot(
        x, values[:, 0], color=colour, marker=_MARKERS[role], label=role,
        markerfacecolor="none" if role == "gold" else colour,
    )  # fmt: skip
    ax.fill_between(x, values[:, 1], values[:, 2], color=colour, alpha=0.15, lw=0)


def _grouped_bars(
    scores: dict[str, list[dict[str, Any]]],
    labels: list[str],
    ylabel: str,
    title: str,
    models: dict[str, dict[str, Any]],
) -> Figure:
    fig = Figure(figsize=(max(5.0, 1.6 * len(labels)), 4.0), layout="constrained")
    ax = fig.subplots()
    _bars_on(ax, scores, labels, models)
    ax.set_ylabel(ylabel)
    handles, _ = ax.get_legend_handles_labels()
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def _bars_on(
    ax: Any,
    scores: dict[str, list[dict[str, Any]]],
    labels: list[str],
    models: dict[str, dict[str, Any]],
) -> None:
    """Bars of accuracy with CI, grouped by label, one colour per model role."""
    width = 0.8 / len(scores)
    centres = np.arange(len(labels))
    for k, (role, values) in enumerate(scores.items()):
        accuracy, low, high = _accuracies([{"scores": {role: v}} for v in values], role)
        ax.bar(
            centres + (k - (len(scores) - 1) / 2) * width, accuracy, width,
            yerr=np.clip([accuracy - low, high - accuracy], 0, None), capsize=2,
            color=_COLOURS[role], label=f"{role} ({models[role]['name']})",
        )  # fmt: skip
    ax.set_xticks(centres, labels, fontsize=8)
    ax.set_ylim(0, 1.02)
