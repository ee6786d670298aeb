"""Locate concept vectors: value vectors whose vocabulary projection favours the concept's tokens.

Following Hong et al. (ConceptVectors), each value vector v of every layer is projected onto the
vocabulary (``W_U (g * v)``, see `remnant.concept_vectors.vectors`) and its ``top_k`` tokens are
kept. With p the softmax over those ``top_k`` logits (the full-vocabulary softmax renormalised to
the top k), C the concept token set and B the background token set (`tokens`):

    concept fraction     f_C = sum of p over top-k tokens in C
    background fraction  f_B = sum of p over top-k tokens in B
    score                    = f_C - (|C| / |B|) * f_B

so a vector scores high when its top tokens carry concept-specific mass beyond what its
preference for ordinary (background) words would give a token set of C's size. Scores lie in
[-|C|/|B|, 1]; they are unitless fractions of probability mass.

Only vectors whose top k hold at least ``min_words`` distinct concept words (token texts
stripped and lowercased) are ranked: a vector whose concept mass is one word in four spellings
(" years", "Years", ...) promotes that word, not the concept.

With ``signs="both"`` (default) each vector is scored as v and as -v and keeps the better sign:
a gated MLP (SwiGLU: silu(gate) * up) gives neurons activations of either sign, so a neuron can
write -v as readily as v (on SmolLM2 the clearest France/French/Paris vector is a -v).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from remnant.attacks.protocol import split_forget
from remnant.concept_vectors.attribution import SCORE_DEFINITION as ATTRIBUTION_DEFINITION
from remnant.concept_vectors.attribution import attribution_scores
from remnant.concept_vectors.tokens import TokenSets, token_sets
from remnant.concept_vectors.vectors import (
    VectorRef,
    gather_vectors,
    readout,
    top_tokens,
    value_vectors,
)
from remnant.errors import ConceptVectorError
from remnant.models.model import Model
from remnant.results import Result
from remnant.scoring.prompts import PromptStyle
from remnant.scoring.statistics import rounded
from remnant.settings import Constraint, InstanceOf, Interval, OneOf, Settings
from remnant.targets.model import QAItem, Target

SCORE_DEFINITION = (
    "f_C - (|C|/|B|) * f_B, where f_X is the softmax mass of the vector's top-k vocabulary "
    "projection (softmax over the top-k logits) that falls on token set X; C = concept tokens "
    "(keywords, forget answers and aliases, recurring forget-passage words; minus B), "
    "B = background tokens (unrelated passages, retain questions and answers). Ranked only when "
    "the top k hold at least min_words distinct concept words; with signs='both' the better of "
    "v and -v"
)


@dataclasses.dataclass(frozen=True)
class Layers(Constraint):
    """None, or a non-empty list or tuple of layer numbers (non-negative Python integers)."""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        return (
            isinstance(value, (list, tuple))
            and len(value) > 0
            and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
            and min(value) >= 0
        )

    def describe(self) -> str:
        return "a non-empty list of layer numbers >= 0 (or None: every layer)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocateSettings(Settings):
    """How value vectors are projected, scored and reported."""

    constraints: ClassVar[Mapping[str, Constraint]] = {
        "top_k": Interval(int, 1),
        "apply_final_norm": InstanceOf(bool),
        "signs": OneOf(("both", "positive")),
        "min_words": Interval(int, 1),
        "min_chars": Interval(int, 1),
        "min_texts": Interval(int, 1),
        "n_candidates": Interval(int, 1),
        "n_show": Interval(int, 1),
        "layers": Layers(),
        "chunk": Interval(int, 1),
        "method": OneOf(("projection", "attribution")),
        "batch_size": Interval(int, 1),
        "seed": InstanceOf(int),
    }

    top_k: int = 200
    """Tokens kept per vocabulary projection (200 as in the paper)."""
    apply_final_norm: bool = True
    """Fold the final RMSNorm weight into the projection."""
    signs: Literal["both", "positive"] = "both"
    """``both``: score v and -v and keep the better; ``positive``: v only."""
    min_words: int = 3
    """Distinct concept words a vector's top k must hold for it to be ranked."""
    min_chars: int = 3
    """Shortest token text (stripped) in a token set; see `remnant.concept_vectors.tokens`."""
    min_texts: int = 2
    """Concept texts a forget-passage word must recur in; see `remnant.concept_vectors.tokens`."""
    n_candidates: int = 50
    """How many top-ranked vectors are returned."""
    n_show: int = 20
    """Decoded top tokens (and concept hits) kept per candidate."""
    layers: tuple[int, ...] | None = None
    """Which layers to search (None: all)."""
    chunk: int = 4096
    """Value vectors per matmul (bounds memory at chunk x vocab floats)."""
    method: Literal["projection", "attribution"] = "projection"
    """How vectors are ranked: ``projection``, by concept score (module docstring);
    ``attribution``, by the estimated effect of zeroing them on the forget answers
    (`remnant.concept_vectors.attribution`), computed on a seeded half of the items."""
    batch_size: int = 16
    """Items per forward and backward pass (``attribution``)."""
    seed: int = 0
    """Seed of the half of the items ``attribution`` is computed on."""


@dataclasses.dataclass(frozen=True)
class LocateResult(Result):
    """Value vectors ranked by concept score (unitless) or by attribution (nats per item), as
    ``score_definition`` says."""

    kind = "locate"
    schema_version = 2

    model: dict[str, Any]
    """Identity of the searched model (name, source, content hash, shape)."""
    target: str
    """Name of the target whose concept was located."""
    settings: dict[str, Any]
    """The `LocateSettings` used, with ``layers`` resolved to the searched layers."""
    score_definition: str
    """The concept score, in words."""
    n_concept_tokens: int
    """Size of the concept token set C."""
    n_background_tokens: int
    """Size of the background token set B."""
    concept_tokens: list[str]
    """The concept tokens, decoded, sorted."""
    n_ranked: int
    """Vectors with enough concept words (``min_words``) in their top k to be ranked."""
    candidates: list[dict[str, Any]]
    """Up to ``n_candidates`` ranked vectors over all searched layers, best first, each with
    rank, layer, index, sign (+1: v, -1: -v carries the concept), score, concept and background
    fractions, how many top-k tokens are concept tokens (``n_concept_in_top_k``) and how many
    distinct concept words they spell (``n_concept_words``), the vector's L2 norm, its first
    decoded top tokens and the concept tokens among its top k."""
    layers: list[dict[str, Any]]
    """Per searched layer: the best ranked score (None if none is ranked), the 99th percentile
    and the mean of all scores there."""
    score_quantiles: dict[str, float]
    """Quantiles (50, 90, 99, 99.9) of every searched vector's score."""
    fitted_on: list[str] | None
    """Questions of the items whose answers the ranking read (``attribution``: its fit half;
    validation scores the others); None for ``projection``, which reads token sets only."""

    def summary(self, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` best candidates: layer, index, sign and score."""
        return [{k: c[k] for k in ("layer", "index", "sign", "score")} for c in self.candidates[:n]]

    def vectors(self, n: int | None = None) -> list[VectorRef]:
        """(layer, index) of the ``n`` best-ranked candidates (all when None)."""
        return [(c["layer"], c["index"]) for c in self.candidates[:n]]

    def signs(self, n: int | None = None) -> list[int]:
        """The sign (+1 or -1) with which each of the ``n`` best candidates carries the concept."""
        return [c["sign"] for c in self.candidates[:n]]


class TokenLookup:
    """The token sets as vocabulary-sized tensors: concept and background masks, and each
    concept token's word number (-1 elsewhere)."""

    def __init__(self, sets: TokenSets, vocab_size: int) -> None:
        self.sets = sets
        self.concept = torch.zeros(vocab_size)
        self.background = torch.zeros(vocab_size)
        self.word = torch.full((vocab_size,), -1, dtype=torch.long)
        self.background[[i for i in sets.background if i < vocab_size]] = 1.0
        words = sorted(set(sets.word_of.values()))
        for token_id, word in sets.word_of.items():
            if token_id < vocab_size:
                self.concept[token_id] = 1.0
                self.word[token_id] = words.index(word)
        self.n_words = len(words)
        self.ratio = len(sets.concept) / len(sets.background)


def score_topk(
    top_logits: torch.Tensor, top_ids: torch.Tensor, lookup: TokenLookup
) -> dict[str, torch.Tensor]:
    """Concept score and its parts for each row of (n, k) top-k logits and token ids."""
    p = torch.softmax(top_logits.float(), dim=-1)
    f_concept = (p * lookup.concept[top_ids]).sum(-1)
    f_background = (p * lookup.background[top_ids]).sum(-1)
    seen = torch.zeros((top_ids.shape[0], lookup.n_words + 1))
    seen.scatter_(1, lookup.word[top_ids] + 1, 1.0)
    return {
        "score": f_concept - lookup.ratio * f_background,
        "concept_fraction": f_concept,
        "background_fraction": f_background,
        "n_concept": lookup.concept[top_ids].sum(-1),
        "n_words": seen[:, 1:].sum(-1),
    }


def layer_scores(
    model: Model, layer: int, lookup: TokenLookup, settings: LocateSettings = LocateSettings()
) -> dict[str, torch.Tensor]:
    """`score_topk` of every value vector of ``layer`` at its better sign (ranked before unranked,
    then higher score), plus that ``sign``: (d_mlp,) tensors. One matmul per ``chunk`` vectors."""
    matrix = readout(model, settings.apply_final_norm)
    vectors = value_vectors(model, layer)
    parts = []
    for start in range(0, vectors.shape[0], settings.chunk):
        logits = vectors[start : start + settings.chunk] @ matrix
        best = score_topk(*torch.topk(logits, settings.top_k, dim=-1), lookup)
        best["sign"] = torch.ones_like(best["score"])
        if settings.signs == "both":
            neg = score_topk(*torch.topk(-logits, settings.top_k, dim=-1), lookup)
            neg["sign"] = -best["sign"]
            ranked_pos = best["n_words"] >= settings.min_words
            ranked_neg = neg["n_words"] >= settings.min_words
            flip = (ranked_neg & ~ranked_pos) | (
                (ranked_neg == ranked_pos) & (neg["score"] > best["score"])
            )
            best = {key: torch.where(flip, neg[key], best[key]) for key in best}
        parts.append(best)
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def run(
    model: Model,
    target: Target,
    settings: LocateSettings = LocateSettings(),
    *,
    prompt_style: PromptStyle = "auto",
) -> LocateResult:
    """Rank every value vector of the searched layers by concept score (see module docstring)
    or, with ``method="attribution"``, by attribution on a seeded half of the items, prompted in
    ``prompt_style`` (`remnant.concept_vectors.attribution`)."""
    layers = list(range(model.n_layers)) if settings.layers is None else list(settings.layers)
    if not all(0 <= layer < model.n_layers for layer in layers):
        raise ConceptVectorError(
            f"layers must be a non-empty list within 0..{model.n_layers - 1}, not {layers}"
        )
    matrix = readout(model, settings.apply_final_norm)
    if settings.top_k > matrix.shape[1]:
        raise ConceptVectorError(
            f"top_k {settings.top_k} exceeds the vocabulary size {matrix.shape[1]}"
        )
    sets = token_sets(model.tokenizer, target, settings.min_chars, settings.min_texts)
    lookup = TokenLookup(sets, matrix.shape[1])
    fitted_on = None
    if settings.method == "attribution":
        forget, retain = fit_half(target, settings.seed)
        all_scores, all_signs = attribution_scores(
            model, forget, retain, prompt_style, settings.batch_size
        )
        scores, signs = all_scores[layers], all_signs[layers]
        ranked = torch.ones_like(scores, dtype=torch.bool)
        fitted_on = [item.question for item in (*forget, *retain)]
        definition = ATTRIBUTION_DEFINITION
    else:
        with torch.no_grad():
            per_layer = [layer_scores(model, layer, lookup, settings) for layer in layers]
        scores = torch.stack([s["score"] for s in per_layer])  # (n_layers, d_mlp)
        signs = torch.stack([s["sign"] for s in per_layer])
        ranked = torch.stack([s["n_words"] for s in per_layer]) >= settings.min_words
        definition = SCORE_DEFINITION
    key = torch.where(ranked, scores, torch.full_like(scores, -torch.inf)).flatten()
    n = min(settings.n_candidates, int(ranked.sum()))
    best = torch.topk(key, n).indices.tolist()
    width = scores.shape[1]
    refs = [(layers[f // width], f % width) for f in best]
    chosen = [(float(scores.flatten()[f]), int(signs.flatten()[f])) for f in best]
    flat = scores.flatten().numpy().astype(np.float64)
    quantiles = np.quantile(flat, [0.5, 0.9, 0.99, 0.999])
    return LocateResult(
        model=model.identity(),
        target=target.name,
        settings=settings.record(layers=layers),
        score_definition=definition,
        n_concept_tokens=len(sets.concept),
        n_background_tokens=len(sets.background),
        concept_tokens=sorted(model.tokenizer.batch_decode([[i] for i in sorted(sets.concept)])),
        n_ranked=int(ranked.sum()),
        candidates=_describe(model, refs, chosen, lookup, settings),
        layers=[
            {
                "layer": layer,
                "max_ranked_score": rounded(row[ok].max()) if ok.any() else None,
                "p99_score": rounded(torch.quantile(row, 0.99)),
                "mean_score": rounded(row.mean()),
            }
            for layer, row, ok in zip(layers, scores, ranked)
        ],
        score_quantiles={key: rounded(q) for key, q in zip(("50", "90", "99", "99.9"), quantiles)},
        fitted_on=fitted_on,
    )


def fit_half(target: Target, seed: int) -> tuple[tuple[QAItem, ...], tuple[QAItem, ...]]:
    """The items attribution reads: the fit side of `split_forget` (whole entity groups, about
    half the forget items) and every other retain item (the first, third, ...)."""
    return split_forget(target, 0.5, seed).fit, tuple(target.retain[::2])


def _describe(
    model: Model,
    refs: Sequence[VectorRef],
    chosen: Sequence[tuple[float, int]],
    lookup: TokenLookup,
    settings: LocateSettings,
) -> list[dict[str, Any]]:
    """One plain dict per candidate (its ranking score and sign, as ``chosen`` gives them), with
    the vocabulary projection of the vector at that sign: its concept and background fractions,
    concept tokens and words in its top k, decoded top tokens and concept hits."""
    signs = [sign for _, sign in chosen]
    oriented = gather_vectors(model, refs) * torch.tensor(signs, dtype=torch.float32)[:, None]
    top_logits, top_ids = top_tokens(model, oriented, settings.top_k, settings.apply_final_norm)
    projected = score_topk(top_logits, top_ids, lookup)
    decode = model.tokenizer.batch_decode
    out = []
    rows = zip(refs, chosen, top_ids.tolist(), oriented)
    for rank, ((layer, index), (score, sign), ids, vector) in enumerate(rows):
        hits = [i for i in ids if i in lookup.sets.concept]
        out.append(
            {
                "rank": rank,
                "layer": layer,
                "index": index,
                "sign": sign,
                "score": rounded(score),
                "concept_fraction": rounded(projected["concept_fraction"][rank]),
                "background_fraction": rounded(projected["background_fraction"][rank]),
                "n_concept_in_top_k": int(projected["n_concept"][rank]),
                "n_concept_words": int(projected["n_words"][rank]),
                "norm": rounded(vector.norm()),
                "top_tokens": decode([[i] for i in ids[: settings.n_show]]),
                "concept_hits": decode([[i] for i in hits[: settings.n_show]]),
            }
        )
    return out
