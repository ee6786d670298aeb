"""Ablate concept vectors directly in a model's weights and write the result as a new checkpoint.

The model given is never modified: a spec is loaded afresh, a `Model` is copied first
(`remnant.models.load_copy`). The chosen value vectors are edited in that copy's weights
(`interventions.edit_weights`: zero the down_proj column, add seeded N(0, sigma^2) noise to it,
or project the vectors' directions out of the layer's MLP output), the forget and retain items
are scored before and after (`remnant.scoring.split_scores`), and the copy is saved with
``remnant-ablation.json`` (the `AblateResult`: vectors, mode, sigma/seed, source and output
content hashes, scores).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from remnant.concept_vectors import locate
from remnant.concept_vectors.interventions import (
    INTERVENTION_CONSTRAINTS,
    Mode,
    edit_weights,
    require_noise_sigma,
)
from remnant.concept_vectors.locate import LocateSettings
from remnant.concept_vectors.vectors import VectorRef, check_vectors
from remnant.errors import ConceptVectorError
from remnant.io import check_output_free
from remnant.models.loading import load_copy, load_model
from remnant.models.model import Model
from remnant.results import Result
from remnant.scoring import ScoringSettings, accuracy_change, resolve_style, split_scores
from remnant.settings import Constraint, InstanceOf, Interval, require
from remnant.targets.model import Target

log = logging.getLogger(__name__)

REPORT_FILE = "remnant-ablation.json"


@dataclasses.dataclass(frozen=True)
class VectorList(Constraint):
    """None, or a list or tuple of (layer, index) pairs of Python integers."""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        return isinstance(value, (list, tuple)) and all(
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
            for pair in value
        )

    def describe(self) -> str:
        return "a list of (layer, index) pairs of integers (or None)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblateSettings(ScoringSettings):
    """Which value vectors are ablated and how; the scoring fields score the forget and retain
    items before and after, and ``seed`` is the seed of the noise (mode ``noise``). Give exactly
    one of ``vectors`` and ``n_vectors``."""

    constraints: ClassVar[Mapping[str, Constraint]] = {
        **INTERVENTION_CONSTRAINTS,
        "vectors": VectorList(),
        "n_vectors": Interval(int, 1, optional=True),
        "locate": InstanceOf(LocateSettings),
    }

    vectors: tuple[tuple[int, int], ...] | None = None
    """The (layer, index) pairs to ablate."""
    n_vectors: int | None = None
    """Ablate the N top-ranked vectors of `locate.run` with ``locate`` (ranked by vocabulary
    projection only, not causally validated)."""
    mode: Mode = "zero"
    """The edit (`remnant.concept_vectors.interventions`): zero, noise or project."""
    sigma: float = 0.1
    """Noise standard deviation (mode ``noise``; weight units)."""
    locate: LocateSettings = LocateSettings()
    """How vectors are located when chosen by ``n_vectors``."""

    def check(self) -> None:
        require(
            (self.vectors is None) != (self.n_vectors is None),
            "choose the vectors to ablate either by (layer, index) pairs (--layer/--index) or as "
            "the N top-ranked located vectors (--vectors N), not both and not neither",
        )
        require(
            self.vectors is None or len(self.vectors) > 0, "the list of vectors to ablate is empty"
        )
        require_noise_sigma(self.mode, self.sigma)


@dataclasses.dataclass(frozen=True)
class AblateResult(Result):
    """What an ablation did and what it removed."""

    kind = "ablate"

    source: dict[str, Any]
    """Identity of the input model (name, source, content hash, shape)."""
    target: str
    """Name of the target whose items were scored (and whose concept was located)."""
    output: str
    """The folder the ablated checkpoint was written to."""
    output_content_hash: str
    """Content hash of the written (ablated) weights."""
    selection: str
    """How the vectors were chosen (given, or the top N located), in words."""
    mode: str
    """The edit: zero, noise or project."""
    sigma: float | None
    """Noise standard deviation (weight units); None unless mode is noise."""
    seed: int
    """Seed of the noise."""
    vectors: list[dict[str, Any]]
    """The ablated vectors: layer, index and, when chosen by `locate.run`, rank, sign, score
    and top tokens."""
    settings: dict[str, Any]
    """The `AblateSettings` used (prompt style resolved)."""
    before: dict[str, Any]
    """Scores before the edit (`remnant.scoring.split_scores`): per split (forget, retain; None
    when the target has no such items) the number of items, greedy accuracy (alias match),
    accuracy over answered items and mean answer log-probability (nats, summed over answer
    tokens); and the ``seconds`` the scoring took."""
    after: dict[str, Any]
    """The same scores after the edit."""

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Greedy accuracy before and after, per split with items."""
        return accuracy_change(self.before, self.after)


def run(
    model: Model | str,
    target: Target,
    settings: AblateSettings,
    *,
    out: str | os.PathLike[str],
    overwrite: bool = False,
) -> AblateResult:
    """Ablate value vectors in a copy of ``model`` and save the copy to ``out``.

    ``model`` is a spec (loaded afresh and edited) or a `Model` (copied first; never modified).
    ``out`` is refused if it exists, before any work, unless ``overwrite``. Scores the forget
    and retain items with ``settings`` before and after the edit, then writes the checkpoint
    with ``remnant-ablation.json`` (`AblateResult.to_dict`) beside the weights.
    """
    check_output_free(out, overwrite)
    edited = load_model(model) if isinstance(model, str) else load_copy(model)
    source = edited.identity()
    if settings.vectors is not None:
        chosen = [{"layer": layer, "index": index} for layer, index in settings.vectors]
        selection = "given"
    else:
        n_vectors = settings.n_vectors
        wanted = max(n_vectors, settings.locate.n_candidates)
        located = locate.run(
            edited, target, dataclasses.replace(settings.locate, n_candidates=wanted)
        )
        if len(located.candidates) < n_vectors:
            raise ConceptVectorError(
                f"asked for {n_vectors} vectors but locate ranked only {len(located.candidates)} "
                f"(vectors with {settings.locate.min_words} concept words in their top tokens); "
                "ask for fewer, or lower min_words"
            )
        chosen = [
            {k: c[k] for k in ("layer", "index", "rank", "sign", "score", "top_tokens")}
            for c in located.candidates[:n_vectors]
        ]
        selection = f"top {n_vectors} located (vocabulary projection, not causally validated)"
    refs: list[VectorRef] = [(c["layer"], c["index"]) for c in chosen]
    check_vectors(edited, refs)
    log.info("ablating %d value vector(s) (%s) of %s", len(refs), settings.mode, edited.name)
    before = split_scores(edited, target, settings)
    edit_weights(edited, refs, settings.mode, sigma=settings.sigma, seed=settings.seed)
    after = split_scores(edited, target, settings)
    result = AblateResult(
        source=source,
        target=target.name,
        output=str(out),
        output_content_hash=edited.content_hash,
        selection=selection,
        mode=settings.mode,
        sigma=settings.sigma if settings.mode == "noise" else None,
        seed=settings.seed,
        vectors=chosen,
        settings=settings.record(prompt_style=resolve_style(edited, settings.prompt_style)),
        before=before,
        after=after,
    )
    edited.save(Path(out), extra_files={REPORT_FILE: result.to_dict()}, overwrite=overwrite)
    return result
