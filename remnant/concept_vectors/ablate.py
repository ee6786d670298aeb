"""Ablate concept vectors directly in a model's weights and write the result as a new checkpoint.

The model is loaded afresh (the input checkpoint is only read), the chosen value vectors are
edited in the loaded copy's weights (`interventions.edit_weights`: zero the down_proj column,
add seeded N(0, sigma^2) noise to it, or project the vectors' directions out of the layer's MLP
output), the forget and retain items are scored before and after, and the copy is saved with
``remnant-ablation.json`` (vectors, mode, sigma/seed, source and output content hashes, scores).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from remnant.concept_vectors.interventions import Mode, check_mode, edit_weights
from remnant.concept_vectors.locate import LocateSettings, locate
from remnant.concept_vectors.vectors import VectorRef, check_vectors
from remnant.errors import ConceptVectorError, OutputExistsError
from remnant.models.loading import load_model
from remnant.models.model import Model
from remnant.results import Result
from remnant.scoring import ScoringSettings, resolve_style, score_qa
from remnant.targets.model import Target

log = logging.getLogger(__name__)

REPORT_FILE = "remnant-ablation.json"
_KEPT = ("n", "accuracy", "answered_accuracy", "mean_logprob_sum")


@dataclasses.dataclass(frozen=True)
class AblateResult(Result):
    """What an ablation did and what it removed. ``vectors``: layer, index (and, when chosen by
    `locate`, rank, sign, score and top tokens); ``selection``: how they were chosen;
    ``before`` / ``after``: per split (forget, retain) the number of items, greedy accuracy
    (alias match), accuracy over answered items and mean answer log-probability (nats, summed
    over answer tokens); ``source`` / ``output_content_hash``: the input model's identity and
    the written checkpoint's content hash."""

    kind = "ablate"

    source: dict[str, Any]
    target: str
    output: str
    output_content_hash: str
    selection: str
    mode: str
    sigma: float | None
    seed: int
    vectors: list[dict[str, Any]]
    settings: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]


def ablate(
    model: str,
    target: Target,
    out_dir: str | Path,
    *,
    vectors: Sequence[VectorRef] | None = None,
    n_vectors: int | None = None,
    mode: Mode = "zero",
    sigma: float = 0.1,
    seed: int = 0,
    settings: ScoringSettings = ScoringSettings(),
    locate_settings: LocateSettings = LocateSettings(),
    overwrite: bool = False,
    adapter: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> AblateResult:
    """Load ``model`` afresh, ablate value vectors in the loaded copy and save it to ``out_dir``.

    Give either ``vectors`` ((layer, index) pairs) or ``n_vectors`` (the N top-ranked vectors of
    `locate` with ``locate_settings``, ranked by vocabulary projection only, not causally
    validated). See `ablate_subject` for the rest.
    """
    _check_request(out_dir, vectors, n_vectors, mode, sigma, overwrite)
    subject = load_model(model, adapter=adapter, device=device, dtype=dtype)
    return ablate_subject(
        subject,
        target,
        out_dir,
        vectors=vectors,
        n_vectors=n_vectors,
        mode=mode,
        sigma=sigma,
        seed=seed,
        settings=settings,
        locate_settings=locate_settings,
        overwrite=overwrite,
    )


def ablate_subject(
    subject: Model,
    target: Target,
    out_dir: str | Path,
    *,
    vectors: Sequence[VectorRef] | None = None,
    n_vectors: int | None = None,
    mode: Mode = "zero",
    sigma: float = 0.1,
    seed: int = 0,
    settings: ScoringSettings = ScoringSettings(),
    locate_settings: LocateSettings = LocateSettings(),
    overwrite: bool = False,
) -> AblateResult:
    """Like `ablate`, on a Model the caller loaded for this purpose: its weights ARE edited in
    place (the checkpoint it was loaded from is not touched). Scores the forget and retain items
    with ``settings`` before and after, then writes ``out_dir`` (refused if it exists unless
    ``overwrite``) with ``remnant-ablation.json``."""
    _check_request(out_dir, vectors, n_vectors, mode, sigma, overwrite)
    source = subject.identity()
    if vectors is not None:
        chosen = [{"layer": int(layer), "index": int(index)} for layer, index in vectors]
        selection = "given"
    else:
        wanted = max(n_vectors, locate_settings.n_candidates)
        located = locate(subject, target, dataclasses.replace(locate_settings, n_candidates=wanted))
        if len(located.candidates) < n_vectors:
            raise ConceptVectorError(
                f"asked for {n_vectors} vectors but locate ranked only {len(located.candidates)} "
                f"(vectors with {locate_settings.min_words} concept words in their top tokens); "
                "ask for fewer, or lower min_words"
            )
        chosen = [
            {k: c[k] for k in ("layer", "index", "rank", "sign", "score", "top_tokens")}
            for c in located.candidates[:n_vectors]
        ]
        selection = f"top {n_vectors} located (vocabulary projection, not causally validated)"
    refs = [(c["layer"], c["index"]) for c in chosen]
    check_vectors(subject, refs)
    log.info("ablating %d value vector(s) (%s) of %s", len(refs), mode, subject.name)
    before = _scores(subject, target, settings)
    edit_weights(subject, refs, mode, sigma=sigma, seed=seed)
    after = _scores(subject, target, settings)
    recorded = dataclasses.asdict(settings) | {
        "prompt_style": resolve_style(subject, settings.prompt_style)
    }
    if vectors is None:
        recorded["locate"] = dataclasses.asdict(locate_settings)
    result = AblateResult(
        source=source,
        target=target.name,
        output=str(out_dir),
        output_content_hash=subject.content_hash,
        selection=selection,
        mode=mode,
        sigma=sigma if mode == "noise" else None,
        seed=seed,
        vectors=chosen,
        settings=recorded,
        before=before,
        after=after,
    )
    subject.save(out_dir, extra_files={REPORT_FILE: result.to_dict()}, overwrite=overwrite)
    return result


def _check_request(
    out_dir: str | Path,
    vectors: Sequence[VectorRef] | None,
    n_vectors: int | None,
    mode: str,
    sigma: float,
    overwrite: bool,
) -> None:
    """Refuse a bad request before anything is loaded or computed."""
    if Path(out_dir).exists() and not overwrite:
        raise OutputExistsError(
            f"{out_dir} exists; choose another output folder or pass --overwrite"
        )
    if (vectors is None) == (n_vectors is None):
        raise ConceptVectorError(
            "choose the vectors to ablate either by (layer, index) pairs (--layer/--index) or as "
            "the N top-ranked located vectors (--vectors N), not both and not neither"
        )
    if vectors is not None and not vectors:
        raise ConceptVectorError("the list of vectors to ablate is empty")
    if n_vectors is not None and n_vectors < 1:
        raise ConceptVectorError(f"--vectors must be at least 1, not {n_vectors}")
    check_mode(mode, sigma)


def _scores(subject: Model, target: Target, settings: ScoringSettings) -> dict[str, Any]:
    """Accuracy, answered accuracy and mean answer log-prob (nats) per split with items."""
    out = {}
    for split in ("forget", "retain"):
        items = getattr(target, split)
        if items:
            summary = score_qa(subject, items, settings)
            out[split] = {key: summary[key] for key in _KEPT}
    return out
