"""Cross-model patching: at which layers does the unlearned model differ where it matters?

For each forget fact the original model knows, one layer's block output, MLP output or
attention output (at all positions, or at the last token only) is taken from one model and
written into the other. *restore*: original activations patched into the unlearned model
(how much of the original answer probability comes back); *destroy*: unlearned activations
patched into the original model (how much of it is lost). Probabilities are of the answer's
first token, in [0, 1]; the fraction of the gap moved is
(patched - receiver) / (donor - receiver), computed over the facts whose answer probability
the unlearning cut by at least the fraction ``min_drop`` of its original value.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from remnant.models.compat import check_compatible
from remnant.models.model import Model
from remnant.progress import progress_bar
from remnant.results import Result
from remnant.scoring import resolve_style
from remnant.scoring.statistics import mean_ci, rounded
from remnant.settings import Constraint, Interval, OneOf
from remnant.targets.model import QAItem, Target
from remnant.tracing.facts import FactSettings, known_fact_contexts
from remnant.tracing.patching import (
    SITES,
    PreparedPrompt,
    Rows,
    all_site_hooks,
    attribution_effects,
    patched_probs,
)

log = logging.getLogger(__name__)

SCOPES = ("all", "last")
DIRECTIONS = ("restore", "destroy")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffSettings(FactSettings):
    """Which facts enter the normalised curves; recorded in every result. With
    ``context="generation"`` the answer is read where the original model states it in its
    greedy output; both models read the same tokens."""

    constraints: ClassVar[dict[str, Constraint]] = {
        "min_drop": Interval(float, 0, 1, open_low=True),
        "method": OneOf(("exact", "attribution")),
    }

    min_drop: float = 0.5
    """Smallest relative drop (original - unlearned) / original of a fact's answer probability
    for it to enter the normalised curves (the fraction of the gap moved)."""
    method: Literal["exact", "attribution"] = "exact"
    """``exact``: every patch run; ``attribution``: every patch's effect estimated from one
    forward and one backward pass of the receiving model per direction
    (`remnant.tracing.patching.attribution_effects`), a first-order estimate whose
    probabilities may leave [0, 1]."""


@dataclasses.dataclass(frozen=True)
class ModelDiffResult(Result):
    """Cross-model patching between an original and an unlearned model: per-layer curves
    averaged over the forget facts the original knows."""

    kind = "diff"

    original: dict[str, Any]
    """Identity of the original model (name, source, content hash)."""
    unlearned: dict[str, Any]
    """Identity of the unlearned model."""
    target: str
    """Name of the target whose forget facts were patched."""
    settings: dict[str, Any]
    """`DiffSettings` used, with the prompt style ``auto`` resolved (for the original model)."""
    n_layers: int
    """Number of transformer blocks (the length of every curve)."""
    original_prob: dict[str, Any]
    """The original model's answer-token probability over the facts: ``mean`` (in [0, 1]) and
    95% bootstrap ``ci``."""
    unlearned_prob: dict[str, Any]
    """The unlearned model's answer-token probability, likewise."""
    n_affected: int
    """Facts whose answer probability the unlearning cut by at least ``min_drop`` of its
    original value: the facts the ``fraction`` curves average over."""
    facts: list[dict[str, Any]]
    """Per fact: question, answer, ``context`` (the generated text the prompt was extended by),
    ``p_original`` and ``p_unlearned`` (answer-token probabilities) and
    ``patched[direction][site][scope]``: the patched probability per layer."""
    curves: list[dict[str, Any]]
    """One per (direction, site, scope): per-layer ``patched_mean`` / ``patched_ci`` (answer
    probability) and ``fraction_mean`` / ``fraction_ci`` (fraction of the gap moved toward
    the donor, over the affected facts), with 95% bootstrap CIs; ``peak_layer`` (argmax of the
    fraction; None without affected facts) and ``at_storing_layers`` (the fraction's mean over
    ``storing_layers``, or None)."""
    storing_layers: list[int] | None
    """Layers given as storing the facts (e.g. from causal tracing), or None."""

    def curve(self, direction: str, site: str, scope: str) -> dict[str, Any]:
        """The curve for one direction (restore/destroy), site (resid/mlp/attn) and scope."""
        for curve in self.curves:
            if (curve["direction"], curve["site"], curve["scope"]) == (direction, site, scope):
                return curve
        raise KeyError((direction, site, scope))

    def summary(self) -> dict[str, Any]:
        """Mean answer probability of both models, facts patched and affected, and per curve
        its peak layer, the fraction moved there and its mean over the storing layers."""
        rows = []
        for curve in self.curves:
            peak = curve["peak_layer"]
            rows.append(
                {
                    "direction": curve["direction"],
                    "site": curve["site"],
                    "scope": curve["scope"],
                    "peak_layer": peak,
                    "peak_fraction": None if peak is None else curve["fraction_mean"][peak],
                    "at_storing_layers": curve["at_storing_layers"],
                }
            )
        return {
            "original_prob": self.original_prob["mean"],
            "unlearned_prob": self.unlearned_prob["mean"],
            "n_facts": len(self.facts),
            "n_affected": self.n_affected,
            "curves": rows,
        }


def diff_rows(n_tokens: int, n_layers: int) -> Rows:
    """One row per (site, scope, layer), in that order: the site's output at that one layer
    is replaced at every position (scope ``all``) or at the last token (``last``)."""
    site = torch.arange(len(SITES)).repeat_interleave(len(SCOPES) * n_layers)
    scope = torch.arange(len(SCOPES)).repeat_interleave(n_layers).repeat(len(SITES))
    layer = torch.arange(n_layers).repeat(len(SITES) * len(SCOPES))
    scope_positions = torch.zeros(len(SCOPES), n_tokens, dtype=torch.bool)
    scope_positions[0] = True
    scope_positions[1, -1] = True
    return Rows(
        site=site,
        layers=torch.eye(n_layers, dtype=torch.bool)[layer],
        positions=scope_positions[scope],
        sample=torch.full((len(site),), -1),
    )


def diff_fact(
    original: Model,
    unlearned: Model,
    ids: Sequence[int],
    answer_id: int,
    batch_size: int = 64,
    method: str = "exact",
) -> dict[str, Any]:
    """One prompt: both models' answer probabilities and, per direction, the patched
    probability (site x scope x layer) as nested lists, run (``exact``) or estimated
    (``attribution``)."""
    names = all_site_hooks(original)
    prompts = {
        "original": PreparedPrompt(original, ids, names),
        "unlearned": PreparedPrompt(unlearned, ids, names),
    }
    rows = diff_rows(len(ids), original.n_layers) if method == "exact" else None
    shape = (len(SITES), len(SCOPES), original.n_layers)
    patched = {}
    for direction, receiver, donor in (
        ("restore", "unlearned", "original"),
        ("destroy", "original", "unlearned"),
    ):
        into, values = prompts[receiver], prompts[donor].acts
        if method == "attribution":
            effects = attribution_effects(into, values, answer_id)
            scoped = torch.stack([effects.sum(1), effects[:, -1]], dim=1)  # scopes all, last
            patched[direction] = float(into.probs[0, answer_id]) + scoped
        else:
            probs = patched_probs(into, rows, values, answer_id, batch_size=batch_size)
            patched[direction] = probs.view(shape)
    return {
        "p_original": rounded(prompts["original"].probs[0, answer_id]),
        "p_unlearned": rounded(prompts["unlearned"].probs[0, answer_id]),
        "patched": {
            direction: {
                site: {
                    scope: np.round(values[k, j].numpy().astype(np.float64), 6).tolist()
                    for j, scope in enumerate(SCOPES)
                }
                for k, site in enumerate(SITES)
            }
            for direction, values in patched.items()
        },
    }


def run(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: DiffSettings = DiffSettings(),
    *,
    storing_layers: Sequence[int] | None = None,
    items: Sequence[QAItem] | None = None,
    progress: bool = False,
) -> ModelDiffResult:
    """Patch each layer between the ``original`` and ``unlearned`` model on the forget facts the
    original knows (or ``items``), up to ``settings.max_facts``; ``storing_layers`` (e.g. from
    causal tracing) are recorded and each curve's mean over them reported; ``progress`` shows a
    progress bar over the facts."""
    check_compatible(original, unlearned, "patch activations")
    style = resolve_style(original, settings.prompt_style)
    facts = []
    for item, context in progress_bar(
        known_fact_contexts(original, target, settings, items),
        desc="facts",
        unit="fact",
        enabled=progress,
    ):
        fact = diff_fact(
            original,
            unlearned,
            context.ids,
            context.answer_id,
            settings.batch_size,
            settings.method,
        )
        facts.append(
            {"question": item.question, "answer": item.answer, "context": context.extension} | fact
        )
        log.info("patched %r", item.question)
    p_original = np.array([f["p_original"] for f in facts])
    p_unlearned = np.array([f["p_unlearned"] for f in facts])
    affected = p_original - p_unlearned >= settings.min_drop * p_original
    if not affected.any():
        log.warning(
            "no fact's answer probability dropped by %.0f%% or more; fractions are undefined",
            100 * settings.min_drop,
        )
    curves = [
        _curve(facts, direction, site, scope, affected, storing_layers, settings)
        for direction in DIRECTIONS
        for site in SITES
        for scope in SCOPES
    ]
    return ModelDiffResult(
        original=original.identity(),
        unlearned=unlearned.identity(),
        target=target.name,
        settings=settings.record(prompt_style=style),
        n_layers=original.n_layers,
        original_prob=mean_ci(p_original, n_resamples=settings.n_bootstrap, seed=settings.seed),
        unlearned_prob=mean_ci(p_unlearned, n_resamples=settings.n_bootstrap, seed=settings.seed),
        n_affected=int(affected.sum()),
        facts=facts,
        curves=curves,
        storing_layers=None if storing_layers is None else [int(x) for x in storing_layers],
    )


def _curve(
    facts: list[dict[str, Any]],
    direction: str,
    site: str,
    scope: str,
    affected: np.ndarray,
    storing_layers: Sequence[int] | None,
    settings: DiffSettings,
) -> dict[str, Any]:
    patched = np.array([f["patched"][direction][site][scope] for f in facts])
    p_original = np.array([f["p_original"] for f in facts])[:, None]
    p_unlearned = np.array([f["p_unlearned"] for f in facts])[:, None]
    receiver, donor = (
        (p_unlearned, p_original) if direction == "restore" else (p_original, p_unlearned)
    )
    fraction = (patched[affected] - receiver[affected]) / (donor[affected] - receiver[affected])
    stats = partial(mean_ci, n_resamples=settings.n_bootstrap, seed=settings.seed)
    patched_stats = [stats(col) for col in patched.T]
    fraction_stats = [stats(col) for col in fraction.T]
    fraction_mean = [s["mean"] for s in fraction_stats]
    has_fraction = bool(affected.any())
    return {
        "direction": direction,
        "site": site,
        "scope": scope,
        "patched_mean": [s["mean"] for s in patched_stats],
        "patched_ci": [s["ci"] for s in patched_stats],
        "fraction_mean": fraction_mean,
        "fraction_ci": [s["ci"] for s in fraction_stats],
        "peak_layer": int(np.argmax(fraction_mean)) if has_fraction else None,
        "at_storing_layers": (
            rounded(np.mean([fraction_mean[i] for i in storing_layers]))
            if has_fraction and storing_layers
            else None
        ),
    }
