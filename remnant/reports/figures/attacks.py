"""Figures of the attacks that try to bring forgotten knowledge back, drawn from their
`AttackResult`s only."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from remnant.attacks.protocol import BASELINE, ROLES, AttackResult

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
    width = 0.8 / len(roles)
    fig = Figure(figsize=(max(5.0, 1.0 + 1.1 * len(conditions)), 4.0), layout="constrained")
    ax = fig.subplots()
    centres = np.arange(len(conditions))
    for k, role in enumerate(roles):
        accuracy, low, high = _accuracies(conditions, role)
        ax.bar(
            centres + (k - (len(roles) - 1) / 2) * width,
            accuracy,
            width,
            yerr=np.clip([accuracy - low, high - accuracy], 0, None),
            capsize=2,
            color=_COLOURS[role],
            label=f"{role} ({result.models[role]['name']})",
        )
    for centre, condition in zip(centres, conditions):
        if condition["chance"] > 0:
            ax.hlines(condition["chance"], centre - 0.45, centre + 0.45, colors="black", ls=":")
    labels = [f"{c['name']}\nn={c['scores']['unlearned']['n']}" for c in conditions]
    ax.set_xticks(centres, labels, fontsize=8)
    ax.set_ylim(0, 1.02)
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
        accuracy, low, high = _accuracies(curve, role)
        colour = _COLOURS[role]
        ax.plot(
            ks, accuracy, color=colour, marker=_MARKERS[role], label=role,
            markerfacecolor="none" if role == "gold" else colour,
        )  # fmt: skip
        ax.fill_between(ks, low, high, color=colour, alpha=0.15, lw=0)
        for condition in unrelated:
            ax.axhline(condition["scores"][role]["accuracy"], color=colour, ls="--", lw=1)
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
