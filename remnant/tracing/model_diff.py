"""Cross-model patching: at which layers does the unlearned model differ where it matters?

For each forget fact the original model knows, one layer's block output, MLP output or
attention output (at all positions, or at the last token only) is taken from one model and
written into the other. *restore*: original activations patched into the unlearned model
(how much of the original answer probability comes back); *destroy*: unlearned activations
patched into the original model (how much of it is lost). Probabilities are of the answer's
first token, in [0, 1]; the fraction of the gap moved is
(patched - receiver) / (donor - receiver), computed over the facts whose answer probability
the unlearning cut by at least the fraction ``min_drop`` of its original value.

Patches are run (``exact``), estimated to first order (``attribution``), or screened
(``screen``): every patch is estimated, and the ones the curves' peaks come from are run. A
last-token patch re-runs one token, so those are always run, and so are the block-output patches
at all positions: the audit reads that whole curve (the verdict's patching line, the restored
fraction, the UDS-style depth), and its first-order estimate is poor (on SmolLM2 against NPO it
was off by up to 0.44 of the gap, `bench/diff_screen.py`). Of the MLP and attention patches at
all positions, per direction and site, the ``screen_top`` layers whose estimated mean effect
over the facts is largest are run, and ``screen_sample`` other layers drawn at random to measure
what the screen misses. The same layers are run for every fact, so each point of a curve is
either measured or estimated over all facts; each curve lists the layers it ran.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
#: The sites whose all-position patches a screen runs only in part (module docstring).
SCREENED_SITES = ("mlp", "attn")
#: Per direction: (the model receiving the patch, the donor model).
ROLES = {"restore": ("unlearned", "original"), "destroy": ("original", "unlearned")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffSettings(FactSettings):
    """Which facts enter the normalised curves; recorded in every result. With
    ``context="generation"`` the answer is read where the original model states it in its
    greedy output; both models read the same tokens."""

    constraints: ClassVar[dict[str, Constraint]] = {
        "min_drop": Interval(float, 0, 1, open_low=True),
        "method": OneOf(("exact", "attribution", "screen")),
        "screen_top": Interval(int, 1, None),
        "screen_sample": Interval(int, 0, None),
    }

    min_drop: float = 0.5
    """Smallest relative drop (original - unlearned) / original of a fact's answer probability
    for it to enter the normalised curves (the fraction of the gap moved)."""
    method: Literal["exact", "attribution", "screen"] = "exact"
    """``exact``: every patch run; ``attribution``: every patch's effect estimated from one
    forward and one backward pass of the receiving model per direction
    (`remnant.tracing.patching.attribution_effects`), a first-order estimate whose
    probabilities may leave [0, 1]; ``screen``: estimated, then the layers chosen by
    ``screen_top`` and ``screen_sample`` run (module docstring)."""
    screen_top: int = 8
    """``screen``: per direction and screened site (MLP, attention), all-position patches run at
    the layers of largest estimated mean effect."""
    screen_sample: int = 4
    """``screen``: per direction and screened site, all-position patches run at this many
    further layers drawn at random (seeded), which measure what the screen misses."""


@dataclasses.dataclass(frozen=True)
class ModelDiffResult(Result):
    """Cross-model patching between an original and an unlearned model: per-layer curves
    averaged over the forget facts the original knows."""

    kind = "diff"
    schema_version = 2

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
    the donor, over the affected facts), with 95% bootstrap CIs; ``layers_run``, the layers
    whose patch was run (the others are estimates: `DiffSettings.method`); ``peak_layer`` (argmax
    of the fraction over the layers run, or over all with method ``attribution``; None without
    affected facts); ``at_storing_layers`` (the fraction's mean over ``storing_layers``, or
    None); ``screen``, for a screened curve, its ``top`` and ``sample`` layers, how many sampled
    layers it ``missed`` and its ``max_error`` (`_screen_check`), else None."""
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
        its peak layer, the fraction moved there, its mean over the storing layers, the number
        of layers run and, when screened, the sampled layers the screen missed."""
        rows = []
        for curve in self.curves:
            peak, screen = curve["peak_layer"], curve["screen"]
            rows.append(
                {
                    "direction": curve["direction"],
                    "site": curve["site"],
                    "scope": curve["scope"],
                    "peak_layer": peak,
                    "peak_fraction": None if peak is None else curve["fraction_mean"][peak],
                    "at_storing_layers": curve["at_storing_layers"],
                    "n_layers_run": len(curve["layers_run"]),
                    "screen_missed": None if screen is None else screen["missed"],
                    "screen_sampled": None if screen is None else len(screen["sample"]),
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
    run_cells: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """One prompt: both models' answer probabilities and, per direction, the patched
    probability (site x scope x layer) as nested lists, run (``exact``) or estimated
    (``attribution``). ``run_cells`` (exact): per direction, a (site, scope, layer) mask of the
    patches to run; the others are NaN."""
    names = all_site_hooks(original)
    prompts = {
        "original": PreparedPrompt(original, ids, names),
        "unlearned": PreparedPrompt(unlearned, ids, names),
    }
    rows = diff_rows(len(ids), original.n_layers)
    shape = (len(SITES), len(SCOPES), original.n_layers)
    patched = {}
    for direction, (receiver, donor) in ROLES.items():
        into, values = prompts[receiver], prompts[donor].acts
        if method == "attribution":
            effects = attribution_effects(into, values, answer_id)
            scoped = torch.stack([effects.sum(1), effects[:, -1]], dim=1)  # scopes all, last
            patched[direction] = float(into.probs[0, answer_id]) + scoped
        else:
            run = np.ones(shape, bool) if run_cells is None else run_cells[direction]
            chosen = torch.from_numpy(np.flatnonzero(run))
            probs = torch.full((len(rows),), float("nan"))
            probs[chosen] = patched_probs(
                into, rows[chosen], values, answer_id, batch_size=batch_size
            )
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
    progress bar over the facts. A ``screen`` with no fewer layers to run than the model has
    runs every patch."""
    check_compatible(original, unlearned, "patch activations")
    style = resolve_style(original, settings.prompt_style)
    n_layers = original.n_layers
    known = list(known_fact_contexts(original, target, settings, items))
    screening = (
        settings.method == "screen" and settings.screen_top + settings.screen_sample < n_layers
    )
    method = "attribution" if settings.method == "attribution" else "exact"
    estimates, chosen, run_cells = None, None, None
    if screening:
        estimates = [
            diff_fact(original, unlearned, context.ids, context.answer_id, method="attribution")
            for _, context in progress_bar(known, desc="screen", unit="fact", enabled=progress)
        ]
        chosen = screen_layers(estimates, n_layers, settings)
        run_cells = _run_cells(chosen, n_layers)
    facts = []
    for k, (item, context) in enumerate(
        progress_bar(known, desc="facts", unit="fact", enabled=progress)
    ):
        fact = diff_fact(
            original, unlearned, context.ids, context.answer_id, settings.batch_size, method,
            run_cells,
        )  # fmt: skip
        if estimates is not None:
            _fill_estimates(fact["patched"], estimates[k]["patched"])
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
    curves = []
    for direction in DIRECTIONS:
        for site in SITES:
            for scope in SCOPES:
                screened = chosen is not None and (direction, site) in chosen and scope == "all"
                layers = sorted(
                    chosen[direction, site]["top"] + chosen[direction, site]["sample"]
                    if screened
                    else ([] if method == "attribution" else range(n_layers))
                )
                curve = _curve(facts, direction, site, scope, affected, storing_layers, settings,
                               layers)  # fmt: skip
                curve["screen"] = (
                    _screen_check(chosen[direction, site], facts, estimates, direction, site)
                    if screened
                    else None
                )
                curves.append(curve)
    return ModelDiffResult(
        original=original.identity(),
        unlearned=unlearned.identity(),
        target=target.name,
        settings=settings.record(prompt_style=style),
        n_layers=n_layers,
        original_prob=mean_ci(p_original, n_resamples=settings.n_bootstrap, seed=settings.seed),
        unlearned_prob=mean_ci(p_unlearned, n_resamples=settings.n_bootstrap, seed=settings.seed),
        n_affected=int(affected.sum()),
        facts=facts,
        curves=curves,
        storing_layers=None if storing_layers is None else [int(x) for x in storing_layers],
    )


def mean_effect(
    facts: Sequence[dict[str, Any]], direction: str, site: str, scope: str
) -> np.ndarray:
    """Per layer, the patched answer probability minus the receiving model's own, averaged
    over ``facts``."""
    receiver = f"p_{ROLES[direction][0]}"
    return np.mean(
        [np.subtract(f["patched"][direction][site][scope], f[receiver]) for f in facts], axis=0
    )


def screen_layers(
    estimates: Sequence[dict[str, Any]], n_layers: int, settings: DiffSettings
) -> dict[tuple[str, str], dict[str, list[int]]]:
    """Per direction and screened site (`SCREENED_SITES`), the layers whose all-position patch
    the screen runs: ``top``, the ``screen_top`` of largest estimated |mean effect| over the
    facts, and ``sample``, ``screen_sample`` of the others drawn at random (seeded)."""
    rng = np.random.default_rng(settings.seed)
    chosen = {}
    for direction in DIRECTIONS:
        for site in SCREENED_SITES:
            size = np.abs(mean_effect(estimates, direction, site, "all"))
            order = np.argsort(-size, kind="stable")
            rest = order[settings.screen_top :]
            sample = rng.choice(rest, size=min(settings.screen_sample, len(rest)), replace=False)
            chosen[direction, site] = {
                "top": sorted(int(x) for x in order[: settings.screen_top]),
                "sample": sorted(int(x) for x in sample),
            }
    return chosen


def _run_cells(
    chosen: dict[tuple[str, str], dict[str, list[int]]], n_layers: int
) -> dict[str, np.ndarray]:
    """Per direction, the (site, scope, layer) mask of the patches to run: all but the
    all-position patches of the screened sites at layers not ``chosen``."""
    cells = {
        direction: np.ones((len(SITES), len(SCOPES), n_layers), bool) for direction in DIRECTIONS
    }
    for (direction, site), layers in chosen.items():
        row = cells[direction][SITES.index(site), SCOPES.index("all")]
        row[:] = False
        row[layers["top"] + layers["sample"]] = True
    return cells


def _fill_estimates(patched: dict[str, Any], estimated: dict[str, Any]) -> None:
    """Replace the patches not run (NaN) by their estimates, in place."""
    for direction, sites in patched.items():
        for site, scopes in sites.items():
            for scope, values in scopes.items():
                guess = estimated[direction][site][scope]
                scopes[scope] = [g if math.isnan(v) else v for v, g in zip(values, guess)]


def _screen_check(
    layers: dict[str, list[int]],
    facts: Sequence[dict[str, Any]],
    estimates: Sequence[dict[str, Any]],
    direction: str,
    site: str,
) -> dict[str, Any]:
    """What the screen of one all-position curve missed: ``missed``, the sampled layers whose
    measured |mean effect| exceeds the smallest among the top layers' (each would have been run
    had the screen ranked it right); ``max_error``, the largest |measured - estimated| mean
    effect over the layers run."""
    measured = mean_effect(facts, direction, site, "all")
    estimated = mean_effect(estimates, direction, site, "all")
    top, sample = layers["top"], layers["sample"]
    floor = np.abs(measured[top]).min()
    run = top + sample
    return {
        "top": top,
        "sample": sample,
        "missed": int((np.abs(measured[sample]) > floor).sum()),
        "max_error": rounded(np.abs(measured[run] - estimated[run]).max()),
    }


def _curve(
    facts: list[dict[str, Any]],
    direction: str,
    site: str,
    scope: str,
    affected: np.ndarray,
    storing_layers: Sequence[int] | None,
    settings: DiffSettings,
    layers_run: Sequence[int],
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
    candidates = list(layers_run) or list(range(len(fraction_mean)))
    return {
        "direction": direction,
        "site": site,
        "scope": scope,
        "patched_mean": [s["mean"] for s in patched_stats],
        "patched_ci": [s["ci"] for s in patched_stats],
        "fraction_mean": fraction_mean,
        "fraction_ci": [s["ci"] for s in fraction_stats],
        "layers_run": [int(x) for x in layers_run],
        "peak_layer": (
            max(candidates, key=lambda layer: fraction_mean[layer]) if has_fraction else None
        ),
        "at_storing_layers": (
            rounded(np.mean([fraction_mean[i] for i in storing_layers]))
            if has_fraction and storing_layers
            else None
        ),
    }
