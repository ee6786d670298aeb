"""Compare value vectors of an original and an unlearned model (Hong et al.: does unlearning
move the concept vectors, or leave them where they were?).

Per vector (oriented by its sign, so -v when -v carries the concept): cosine similarity, the
angle between the two vectors (degrees, float64, stable near 0 where a cosine rounds to 1), L2
distance (absolute, and relative to the original vector's norm) of the two models' vectors; the
Jaccard overlap of their top-k vocabulary tokens, each projected through its own model's
readout; and, for each model, how many of those top-k tokens are concept tokens and the concept
fraction f_C of `remnant.concept_vectors.locate`. The same statistics for random value vectors
of the same layers (random sign, seeded) say what "unchanged" looks like for this pair of models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from remnant.concept_vectors.locate import TokenLookup, score_topk
from remnant.concept_vectors.tokens import token_sets
from remnant.concept_vectors.vectors import (
    VectorRef,
    check_vectors,
    gather_vectors,
    random_vectors,
    readout,
    top_tokens,
)
from remnant.errors import ConceptVectorError
from remnant.models.compat import check_compatible
from remnant.models.model import Model
from remnant.results import Result
from remnant.settings import Constraint, InstanceOf, Interval, Settings
from remnant.targets.model import Target

STATS = (
    "cosine",
    "angle_degrees",
    "l2",
    "relative_l2",
    "jaccard",
    "concept_overlap_original",
    "concept_overlap_unlearned",
    "concept_fraction_original",
    "concept_fraction_unlearned",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareSettings(Settings):
    """How the vectors are projected and how many random reference vectors are drawn."""

    constraints: ClassVar[Mapping[str, Constraint]] = {
        "top_k": Interval(int, 1),
        "apply_final_norm": InstanceOf(bool),
        "min_chars": Interval(int, 1),
        "min_texts": Interval(int, 1),
        "n_random": Interval(int, 1),
    }

    top_k: int = 200
    """Tokens kept per vocabulary projection, as in `LocateSettings`."""
    apply_final_norm: bool = True
    """Fold the final RMSNorm weight into the projection, as in `LocateSettings`."""
    min_chars: int = 3
    """As in `LocateSettings` (token sets)."""
    min_texts: int = 2
    """As in `LocateSettings` (token sets)."""
    n_random: int = 100
    """Random reference value vectors (layers of the compared vectors, random sign)."""
    seed: int = 0
    """Seed of the random reference vectors and their signs."""


@dataclasses.dataclass(frozen=True)
class CompareResult(Result):
    """Original versus unlearned value vectors (see the module docstring)."""

    kind = "compare"

    original: dict[str, Any]
    """Identity of the original model."""
    unlearned: dict[str, Any]
    """Identity of the unlearned model."""
    target: str
    """Name of the target whose token sets give the concept overlaps."""
    settings: dict[str, Any]
    """The `CompareSettings` used."""
    vectors: list[dict[str, Any]]
    """One row per compared vector: layer, index, sign and the ``STATS``: cosine, angle in
    degrees, L2 distance in weight units, L2 relative to the original norm, top-k Jaccard,
    concept tokens among the top k and concept fraction per model."""
    random: list[dict[str, Any]]
    """The same rows for the random reference vectors."""
    statistics: dict[str, dict[str, dict[str, float]]]
    """For both groups (``vectors``, ``random``) and each statistic: the mean, min, 5th
    percentile (``p5``), median and max."""

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and min cosine of the compared vectors and of the random vectors."""
        return {
            group: {k: self.statistics[group]["cosine"][k] for k in ("mean", "min")}
            for group in ("vectors", "random")
        }


def run(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: CompareSettings = CompareSettings(),
    *,
    vectors: Sequence[VectorRef],
    signs: Sequence[int] | None = None,
) -> CompareResult:
    """Compare ``vectors`` (and random reference vectors) between the two models.
    ``signs`` (+1/-1 per vector, default +1) orients the vocabulary projections, e.g.
    ``located.signs(n)`` for ``located.vectors(n)``."""
    check_compatible(original, unlearned, "compare value vectors")
    vectors = [(int(layer), int(index)) for layer, index in vectors]
    if not vectors:
        raise ConceptVectorError("no value vector to compare; pass at least one (layer, index)")
    check_vectors(original, vectors)
    signs = [1] * len(vectors) if signs is None else [int(s) for s in signs]
    if len(signs) != len(vectors) or any(s not in (1, -1) for s in signs):
        raise ConceptVectorError("signs must hold one +1 or -1 per vector")
    rng = np.random.default_rng(settings.seed)
    layers = [layer for layer, _ in vectors]
    randoms = random_vectors(layers, original.d_mlp, settings.n_random, rng, vectors)
    random_signs = rng.choice([-1, 1], size=len(randoms)).tolist()
    sets = token_sets(original.tokenizer, target, settings.min_chars, settings.min_texts)
    lookup = TokenLookup(sets, readout(original, settings.apply_final_norm).shape[1])
    rows = _stats(
        original, unlearned, [*vectors, *randoms], [*signs, *random_signs], lookup, settings
    )
    chosen, reference = rows[: len(vectors)], rows[len(vectors) :]
    return CompareResult(
        original=original.identity(),
        unlearned=unlearned.identity(),
        target=target.name,
        settings=settings.record(),
        vectors=chosen,
        random=reference,
        statistics={"vectors": _statistics(chosen), "random": _statistics(reference)},
    )


def _stats(
    original: Model,
    unlearned: Model,
    refs: Sequence[VectorRef],
    signs: Sequence[int],
    lookup: TokenLookup,
    settings: CompareSettings,
) -> list[dict[str, Any]]:
    """One row of ``STATS`` per vector; every statistic is computed for all rows at once."""
    orient = torch.tensor(signs, dtype=torch.float32)[:, None]
    before = gather_vectors(original, refs) * orient
    after = gather_vectors(unlearned, refs) * orient
    logits_b, ids_b = top_tokens(original, before, settings.top_k, settings.apply_final_norm)
    logits_a, ids_a = top_tokens(unlearned, after, settings.top_k, settings.apply_final_norm)
    shared = (ids_b[:, :, None] == ids_a[:, None, :]).any(-1).sum(-1).float()
    jaccard = shared / (2 * settings.top_k - shared)
    l2 = (after - before).norm(dim=-1)
    unit_b = torch.nn.functional.normalize(before.double(), dim=-1)
    unit_a = torch.nn.functional.normalize(after.double(), dim=-1)
    angle = 2 * torch.atan2((unit_a - unit_b).norm(dim=-1), (unit_a + unit_b).norm(dim=-1))
    columns = {
        "cosine": (unit_b * unit_a).sum(-1),
        "angle_degrees": torch.rad2deg(angle),
        "l2": l2,
        "relative_l2": l2 / before.norm(dim=-1).clamp_min(1e-12),
        "jaccard": jaccard,
        "concept_overlap_original": lookup.concept[ids_b].sum(-1),
        "concept_overlap_unlearned": lookup.concept[ids_a].sum(-1),
        "concept_fraction_original": score_topk(logits_b, ids_b, lookup)["concept_fraction"],
        "concept_fraction_unlearned": score_topk(logits_a, ids_a, lookup)["concept_fraction"],
    }
    return [
        {"layer": layer, "index": index, "sign": sign}
        | {name: float(f"{float(values[k]):.7g}") for name, values in columns.items()}
        for k, ((layer, index), sign) in enumerate(zip(refs, signs))
    ]


def _statistics(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for name in STATS:
        values = np.array([row[name] for row in rows], dtype=np.float64)
        quantiles = {
            "mean": values.mean(),
            "min": values.min(),
            "p5": np.percentile(values, 5),
            "median": np.median(values),
            "max": values.max(),
        }
        out[name] = {key: float(f"{float(q):.7g}") for key, q in quantiles.items()}
    return out
