"""Figures of membership inference, drawn from its `Result` only."""

from __future__ import annotations

from matplotlib.figure import Figure

from remnant.attacks.mia import PRIMARY, SCORE_NAMES, MIAResult

_MODELS = {"original": "tab:blue", "unlearned": "tab:red", "gold": "tab:green"}
_LINES = {"gold": "--"}


def mia_roc(result: MIAResult) -> Figure:
    """ROC curves of the primary membership score (Min-K%++), one panel per comparison (forget
    texts as members against other texts) and one curve per model (gold dashed), with each
    curve's AUROC and 95% CI in the legend; the diagonal is a score that cannot tell the sets
    apart."""
    names = list(result.comparisons)
    fig = Figure(figsize=(4.2 * len(names), 4.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        comparison = result.comparisons[name]
        for role, record in comparison["roles"].items():
            score = record["scores"][PRIMARY]
            low, high = score["ci"]
            ax.plot(
                score["roc"]["fpr"],
                score["roc"]["tpr"],
                color=_MODELS.get(role, "tab:grey"),
                ls=_LINES.get(role, "-"),
                label=f"{role}: AUROC {score['auroc']:.2f} [{low:.2f}, {high:.2f}]",
            )
        ax.plot([0, 1], [0, 1], color="black", ls=":", lw=1)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel(f"false-positive rate ({comparison['non_members']})")
        ax.set_ylabel(f"true-positive rate ({comparison['members']})")
        ax.set_title(
            f"{comparison['n_members']} {comparison['members']} vs\n"
            f"{comparison['n_non_members']} {comparison['non_members']}",
            fontsize=10,
        )
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"Membership inference ({SCORE_NAMES[PRIMARY]}, k = {result.settings['k']:g}) "
        f"on {result.target}"
    )
    return fig
