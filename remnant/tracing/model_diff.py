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
from typing import Any, Literal

import numpy as np
import torch

from remnant.errors import TracingError
from remnant.models.compat import check_compatible
from remnant.models.model import Model
from remnant.progress import progress_bar
from remnant.results import Result
from remnant.scoring import (
    PromptStyle,
    ScoringSettings,
    answer_contexts,
    bootstrap_ci,
    known_forget_generations,
    resolve_style,
)
from remnant.targets.model import QAItem, Target
from remnant.tracing.patching import (
    SITES,
    PreparedPrompt,
    Rows,
    all_site_hooks,
    check_shared_settings,
    patched_probs,
)

log = logging.getLogger(__name__)

SCOPES = ("all", "last")
DIRECTIONS = ("restore", "destroy")


@dataclasses.dataclass(frozen=True)
class DiffSettings:
    """``min_drop``: smallest relative drop (original - unlearned) / original of a fact's answer
    probability for it to enter the normalised curves; ``batch_size`` patched rows per pass;
    ``context``: read the answer where the original model states it in its greedy output
    (``generation``, up to ``max_new_tokens``; both models read the same tokens) or right
    after the prompt (``prompt``)."""

    batch_size: int = 64
    max_facts: int | None = None
    min_drop: float = 0.5
    n_bootstrap: int = 1000
    seed: int = 0
    prompt_style: PromptStyle = "auto"
    context: Literal["generation", "prompt"] = "generation"
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        check_shared_settings(self)
        if not 0 < self.min_drop <= 1:
            raise TracingError(f"min drop must be in (0, 1], not {self.min_drop}")


@dataclasses.dataclass(frozen=True)
class ModelDiffResult(Result):
    """Per-layer patching curves averaged over forget facts. Each curve (direction, site,
    scope) holds the mean patched probability and the mean fraction of the gap moved, each
    with a bootstrap CI per layer, its peak layer and its mean over ``storing_layers``."""

    kind = "diff"

    base: dict[str, Any]
    unlearned: dict[str, Any]
    target: str
    settings: dict[str, Any]
    n_layers: int
    base_prob: dict[str, Any]
    unlearned_prob: dict[str, Any]
    n_affected: int
    facts: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    storing_layers: list[int] | None

    def curve(self, direction: str, site: str, scope: str) -> dict[str, Any]:
        """The curve for one direction (restore/destroy), site (resid/mlp/attn) and scope."""
        for curve in self.curves:
            if (curve["direction"], curve["site"], curve["scope"]) == (direction, site, scope):
                return curve
        raise KeyError((direction, site, scope))


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
    base: Model, unlearned: Model, ids: Sequence[int], answer_id: int, batch_size: int = 64
) -> dict[str, Any]:
    """One prompt: both models' answer probabilities and, per direction, the patched
    probability (site x scope x layer) as nested lists."""
    names = all_site_hooks(base)
    prompts = {
        "base": PreparedPrompt(base, ids, names),
        "unlearned": PreparedPrompt(unlearned, ids, names),
    }
    rows = diff_rows(len(ids), base.n_layers)
    shape = (len(SITES), len(SCOPES), base.n_layers)
    patched = {
        direction: patched_probs(
            prompts[receiver], rows, prompts[donor].acts, answer_id, batch_size=batch_size
        ).view(shape)
        for direction, receiver, donor in (
            ("restore", "unlearned", "base"),
            ("destroy", "base", "unlearned"),
        )
    }
    return {
        "p_base": round(float(prompts["base"].probs[0, answer_id]), 6),
        "p_unlearned": round(float(prompts["unlearned"].probs[0, answer_id]), 6),
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


def model_diff(
    base: Model,
    unlearned: Model,
    target: Target,
    settings: DiffSettings = DiffSettings(),
    *,
    storing_layers: Sequence[int] | None = None,
    items: Sequence[QAItem] | None = None,
    progress: bool = False,
) -> ModelDiffResult:
    """Patch each layer between the original (``base``) and unlearned model on the forget facts
    the original knows (or ``items``); ``storing_layers`` (e.g. from causal tracing) are
    recorded and each curve's mean over them reported."""
    check_compatible(base, unlearned, "patch activations")
    style = resolve_style(base, settings.prompt_style)
    generated: dict[str, str] = {}
    if items is None:
        scoring = ScoringSettings(prompt_style=style, max_new_tokens=settings.max_new_tokens)
        known = known_forget_generations(base, target, scoring)
        items, generated = [i for i, _ in known], {i.question: g for i, g in known}
    items = list(items)[: settings.max_facts]
    contexts = answer_contexts(
        base,
        items,
        style,
        from_generation=settings.context == "generation",
        generations=[generated[i.question] for i in items] if generated else None,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
    )
    facts = []
    for item, context in progress_bar(
        list(zip(items, contexts)), desc="facts", unit="fact", enabled=progress
    ):
        fact = diff_fact(base, unlearned, context.ids, context.answer_id, settings.batch_size)
        facts.append(
            {"question": item.question, "answer": item.answer, "context": context.extension} | fact
        )
        log.info("patched %r", item.question)
    p_base = np.array([f["p_base"] for f in facts])
    p_unlearned = np.array([f["p_unlearned"] for f in facts])
    affected = p_base - p_unlearned >= settings.min_drop * p_base
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
        base=base.identity(),
        unlearned=unlearned.identity(),
        target=target.name,
        settings=dataclasses.asdict(settings) | {"prompt_style": style},
        n_layers=base.n_layers,
        base_prob=_mean_ci(p_base, settings),
        unlearned_prob=_mean_ci(p_unlearned, settings),
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
    p_base = np.array([f["p_base"] for f in facts])[:, None]
    p_unlearned = np.array([f["p_unlearned"] for f in facts])[:, None]
    receiver, donor = (p_unlearned, p_base) if direction == "restore" else (p_base, p_unlearned)
    fraction = ((patched - receiver) / (donor - receiver))[affected]
    patched_stats = [_mean_ci(col, settings) for col in patched.T]
    fraction_stats = [_mean_ci(col, settings) for col in fraction.T]
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
            round(float(np.mean([fraction_mean[i] for i in storing_layers])), 6)
            if has_fraction and storing_layers
            else None
        ),
    }


def _mean_ci(values: np.ndarray, settings: DiffSettings) -> dict[str, Any]:
    return {
        "mean": round(float(values.mean()), 6) if values.size else None,
        "ci": list(bootstrap_ci(values, n_resamples=settings.n_bootstrap, seed=settings.seed)),
    }
