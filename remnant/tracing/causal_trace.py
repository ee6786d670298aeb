"""Causal tracing (after Meng et al., ROME, 2022): which hidden states carry a fact.

The subject's input embeddings are corrupted with Gaussian noise; then the clean value of one
block output (one layer), or of the MLP or attention outputs over a window of layers, is
restored at one token. The score is the probability (in [0, 1]) of the answer's first token,
averaged over the noise samples; the indirect effect is restored score - corrupted score.
With ``context="generation"`` (the default) the prompt runs on through the model's own greedy
answer up to where it states the answer (`remnant.scoring.answer_contexts`), so a chat model
that answers "The capital of France is Paris." is traced at "is", not at its first word.
Positions before the subject are clean in every corrupted run, so restoring them changes
nothing: they are not run, and their score is the corrupted score exactly.

The subject span is the item's own (`QAItem.subject`), else the first target keyword found in
the question (`Target.subject_of`); when neither names one (TOFU- and MUSE-format targets), it
is inferred (`infer_subject`): of the question's name-like spans (`subject_candidates`), the one
whose corruption most lowers the answer probability. Each traced fact says which it was; give
items a ``subject`` to override. Items with no candidate either are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from remnant.errors import TracingError
from remnant.models.model import Model
from remnant.probes.activations import encode_with_subject_spans
from remnant.progress import progress_bar
from remnant.results import Result
from remnant.scoring import AnswerContext, answer_contexts, resolve_style
from remnant.scoring.statistics import bootstrap_ci, rounded
from remnant.settings import Constraint, Interval, OneOf
from remnant.targets.model import QAItem, Target
from remnant.tracing.facts import FactSettings, fact_contexts, known_items
from remnant.tracing.patching import (
    SITES,
    Corruption,
    PreparedPrompt,
    Rows,
    all_site_hooks,
    attribution_effects,
    patched_probs,
)
from remnant.tracing.subjects import subject_candidates

log = logging.getLogger(__name__)

TOKEN_CLASSES = (
    "first_subject",
    "middle_subject",
    "last_subject",
    "first_subsequent",
    "further",
    "last",
)

#: Where a traced fact's subject span came from: the item's ``subject``, the first target
#: keyword found in the question, or inferred by `infer_subject`.
SubjectSource = Literal["item", "keyword", "inferred"]

_NO_SUBJECT = (
    "no {} names its subject or holds a capitalised name to infer it from; give the items a "
    "'subject' (the span of the question naming the entity the fact is about) or give the "
    "target keywords that occur in the questions"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TraceSettings(FactSettings):
    """How facts are corrupted and restored; recorded in every result."""

    constraints: ClassVar[dict[str, Constraint]] = {
        "noise_multiplier": Interval(float, 0),
        "n_samples": Interval(int, 1),
        "window": Interval(int, 1),
        "method": OneOf(("exact", "attribution")),
    }

    noise_multiplier: float = 3.0
    """Std of the Gaussian noise added to the subject's input embeddings, as a multiple of the
    std of the subject-token embeddings over the target's subjects."""
    n_samples: int = 10
    """Noise draws per fact (seeded by ``seed`` and the question)."""
    window: int = 10
    """Layers restored together for the MLP and attention sites, centred on each layer."""
    method: Literal["exact", "attribution"] = "exact"
    """``exact``: every restoration run (batched, each resumed from its unpatched run at the
    restored position and first restored block);
    ``attribution``: every restoration's effect estimated from one forward and one backward pass
    over the noise samples (`attribution_effects`; AtP, Nanda 2023), a first-order estimate
    whose probabilities may leave [0, 1]."""


@dataclasses.dataclass(frozen=True)
class CausalTraceResult(Result):
    """Causal tracing of the forget facts a model knows: per fact and site, the answer
    probability with the clean value restored at each (token, layer), and the mean indirect
    effects over the facts by token class."""

    kind = "trace"
    schema_version = 2

    model: dict[str, Any]
    """Identity of the traced model (name, source, content hash)."""
    target: str
    """Name of the target whose forget facts were traced."""
    settings: dict[str, Any]
    """`TraceSettings` used, with the prompt style ``auto`` resolved."""
    noise_std: float
    """Std of the Gaussian noise added to the subject's input embeddings: ``noise_multiplier``
    times the std of the input embeddings of the tokens ``noise_basis`` says."""
    noise_basis: Literal["named", "candidates"]
    """What the embedding std behind ``noise_std`` is taken over: ``named``: the subject tokens
    of the target's forget items whose item or keywords name a subject; ``candidates`` (when
    none does): the tokens of every subject candidate (`subject_candidates`) of its forget
    items."""
    n_layers: int
    """Number of transformer blocks (the layer axis of every score grid)."""
    facts: list[dict[str, Any]]
    """Per fact: question, answer, subject, ``subject_source`` (`SubjectSource`: ``item``, the
    item's ``subject``; ``keyword``, the first target keyword found in the question;
    ``inferred``, chosen by `infer_subject`), ``subject_candidates`` (for ``inferred``, every
    candidate considered, as `infer_subject` gives them; else None), ``answer_token`` (the
    token read), ``context`` (the generated text the prompt was extended by), ``tokens``,
    ``subject_span`` [start, end), ``clean_prob`` and ``corrupted_prob`` (answer-token
    probability, in [0, 1]) and ``scores[site]``: the probability with the clean value
    restored, (tokens x layers)."""
    n_skipped: int
    """Items left out because their subject could be neither named (no ``subject``, no keyword
    in the question) nor inferred (no candidate span in the question); give them a
    ``subject`` to trace them."""
    average: dict[str, dict[str, dict[str, Any]]]
    """``average[site][token class]``: ``n_facts`` having that class, per-layer ``mean``
    indirect effect (restored - corrupted probability) over them and its 95% bootstrap
    ``ci`` over facts."""
    storing_peak: int | None
    """Layer where the mean MLP effect at the last subject token peaks (None: no positive
    effect)."""
    storing_layers: list[int]
    """The contiguous band of layers around ``storing_peak`` holding at least half its
    effect."""

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per site and token class: facts counted, peak layer, peak and layer-mean effect."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for site, classes in self.average.items():
            out[site] = {}
            for name, avg in classes.items():
                if not avg["n_facts"]:
                    continue
                mean = np.asarray(avg["mean"])
                out[site][name] = {
                    "n_facts": avg["n_facts"],
                    "peak_layer": int(mean.argmax()),
                    "peak_effect": rounded(mean.max()),
                    "mean_effect": rounded(mean.mean()),
                }
        return out


def corruption_noise(
    question: str, n_samples: int, n_tokens: int, d_model: int, std: float, seed: int
) -> torch.Tensor:
    """Gaussian noise (n_samples, n_tokens, d_model) of std ``std``, a function of seed and
    question."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{question}".encode()))
    return torch.randn(n_samples, n_tokens, d_model, generator=generator) * std


def noise_spans(target: Target) -> tuple[Literal["named", "candidates"], list[tuple[str, str]]]:
    """The (question, span) pairs the noise level is measured over, and which they are:
    ``named``, the subject of every forget item whose item or keywords name one; or, when none
    does, ``candidates``, every subject candidate of every forget item."""
    named = [(i.question, s) for i in target.forget if (s := target.subject_of(i))]
    if named:
        return "named", named
    candidates = [
        (i.question, c)
        for i in target.forget
        for c in subject_candidates(i.question, target.keywords)
    ]
    if not candidates:
        raise TracingError(_NO_SUBJECT.format(f"forget item of target {target.name!r}"))
    return "candidates", candidates


def embedding_std(model: Model, target: Target, style: str) -> float:
    """Standard deviation of the input embeddings (the ``embed`` component, whose output is
    ``embed.hook_out``) of the tokens of the spans `noise_spans` gives."""
    _, spans = noise_spans(target)
    prompts = encode_with_subject_spans(model, *zip(*spans), style)
    tokens = [t for p in prompts for t in p.ids[slice(*p.subject_span)]]
    with torch.no_grad():
        embeddings = model.bridge.embed(torch.tensor([tokens], device=model.device))
    return float(embeddings.float().std())


def trace_fact(
    model: Model,
    item: QAItem,
    subject_text: str,
    noise_std: float,
    settings: TraceSettings = TraceSettings(),
    context: AnswerContext | None = None,
) -> dict[str, Any]:
    """Causal trace of one fact: clean and corrupted answer probabilities and, per site, the
    restored probability at every (token, layer). ``context`` (from `answer_contexts`) extends
    the prompt and names the answer token; without it the reference answer's first token is
    read right after the prompt."""
    style = resolve_style(model, settings.prompt_style)
    (prompt,) = encode_with_subject_spans(model, [item.question], [subject_text], style)
    if context is None:
        context = answer_contexts(model, [item], style, from_generation=False)[0]
    _check_extends(context, prompt.ids, item.question)
    ids, answer_id = context.ids, context.answer_id
    start, end = prompt.subject_span
    n_tokens, n_layers, n = len(ids), model.n_layers, settings.n_samples
    noise = corruption_noise(item.question, n, end - start, model.d_model, noise_std, settings.seed)
    names = all_site_hooks(model)
    prepared = PreparedPrompt(model, ids, names, Corruption(noise, start))
    corrupted = prepared.probs[1:, answer_id].mean()
    if settings.method == "attribution":
        effects = attribution_effects(prepared, prepared.acts, answer_id)
        effects[1:] = effects[1:] @ window_masks(n_layers, settings.window).T.float()
        scores = float(corrupted) + effects
    else:
        rows = trace_rows(n_tokens, start, n_layers, n, settings.window)
        probs = patched_probs(
            prepared, rows, prepared.acts, answer_id, batch_size=settings.batch_size
        )
        scores = torch.full((len(SITES), n_tokens, n_layers), float(corrupted))
        scores[:, start:] = probs.view(len(SITES), n_tokens - start, n_layers, n).mean(-1)
    return {
        "question": item.question,
        "answer": item.answer,
        "subject": subject_text,
        "answer_token": model.tokenizer.decode([answer_id]),
        "context": context.extension,
        "tokens": [model.tokenizer.decode([t]) for t in ids],
        "subject_span": [start, end],
        "clean_prob": rounded(prepared.probs[0, answer_id]),
        "corrupted_prob": rounded(corrupted),
        "scores": {
            site: np.round(scores[k].numpy().astype(np.float64), 6).tolist()
            for k, site in enumerate(SITES)
        },
    }


def infer_subject(
    model: Model,
    item: QAItem,
    candidates: Sequence[str],
    context: AnswerContext,
    noise_std: float,
    settings: TraceSettings = TraceSettings(),
) -> tuple[str, list[dict[str, Any]]]:
    """The candidate span of ``item``'s question whose corruption most lowers the probability
    of the answer token ``context`` reads (the first such on ties), and every candidate as
    ``{"text", "subject_span" [start, end), "corrupted_prob", "drop"}``: the answer-token
    probability (in [0, 1]) averaged over the noise samples with the candidate's tokens
    corrupted as `trace_fact` corrupts a subject (same ``noise_std``, samples and seed), and
    its drop from the clean probability. All candidates run in batches of about
    ``settings.batch_size`` rows."""
    if not candidates:
        raise TracingError(_NO_SUBJECT.format(f"candidate span in {item.question!r}"))
    style = resolve_style(model, settings.prompt_style)
    prompts = encode_with_subject_spans(model, [item.question] * len(candidates), candidates, style)
    _check_extends(context, prompts[0].ids, item.question)
    spans = [p.subject_span for p in prompts]
    low, high = min(s for s, _ in spans), max(e for _, e in spans)
    n = settings.n_samples
    # each candidate's noise sits at its own tokens of the shared span [low, high), zero elsewhere
    noise = torch.zeros(len(candidates), n, high - low, model.d_model)
    for k, (start, end) in enumerate(spans):
        noise[k, :, start - low : end - low] = corruption_noise(
            item.question, n, end - start, model.d_model, noise_std, settings.seed
        )
    clean, corrupted = 0.0, []
    for chunk in noise.split(max(1, settings.batch_size // n)):
        prepared = PreparedPrompt(
            model,
            context.ids,
            corruption=Corruption(chunk.flatten(0, 1), low),
            patchable=False,
        )
        clean = float(prepared.probs[0, context.answer_id])
        corrupted.append(prepared.probs[1:, context.answer_id].view(len(chunk), n).mean(-1).cpu())
    probs = torch.cat(corrupted)
    considered = [
        {
            "text": text,
            "subject_span": list(span),
            "corrupted_prob": rounded(p),
            "drop": rounded(clean - p),
        }
        for text, span, p in zip(candidates, spans, probs.tolist())
    ]
    return candidates[int(probs.argmin())], considered


def _check_extends(context: AnswerContext, prompt_ids: Sequence[int], question: str) -> None:
    if tuple(context.ids[: len(prompt_ids)]) != tuple(prompt_ids):
        raise TracingError(f"the answer context of {question!r} does not extend its prompt")


def window_masks(n_layers: int, window: int) -> torch.Tensor:
    """(n_layers, n_layers) booleans: row l marks the ``window`` layers centred on l (clipped
    to the model), the layers an MLP or attention restoration at l covers."""
    lo = torch.arange(n_layers) - window // 2
    layer_index = torch.arange(n_layers)
    return (layer_index >= lo[:, None]) & (layer_index < (lo + window)[:, None])


def trace_rows(n_tokens: int, first: int, n_layers: int, n_samples: int, window: int) -> Rows:
    """One restoring row per site, position (from ``first`` on), layer and noise sample, in that
    order: block output at that layer, MLP or attention output over the window centred there."""
    windows = window_masks(n_layers, window)
    masks = torch.stack([torch.eye(n_layers, dtype=torch.bool), windows, windows])
    n_positions = n_tokens - first
    site = torch.arange(len(SITES)).repeat_interleave(n_positions * n_layers * n_samples)
    position = torch.arange(first, n_tokens).repeat_interleave(n_layers * n_samples)
    layer = torch.arange(n_layers).repeat_interleave(n_samples).repeat(n_positions)
    return Rows(
        site=site,
        layers=masks[site, layer.repeat(len(SITES))],
        positions=torch.eye(n_tokens, dtype=torch.bool)[position.repeat(len(SITES))],
        sample=torch.arange(n_samples).repeat(len(SITES) * n_positions * n_layers),
    )


def token_classes(subject_span: Sequence[int], n_tokens: int) -> dict[str, list[int]]:
    """Positions of each token class (ROME's grouping); classes may be empty or overlap
    (a one-token subject is its own first and last token)."""
    start, end = subject_span
    return {
        "first_subject": [start],
        "middle_subject": list(range(start + 1, end - 1)),
        "last_subject": [end - 1],
        "first_subsequent": [end] if end < n_tokens - 1 else [],
        "further": list(range(end + 1, n_tokens - 1)),
        "last": [n_tokens - 1],
    }


def average_effects(
    facts: Sequence[dict[str, Any]], settings: TraceSettings
) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean indirect effect per site, token class and layer over the facts having that class,
    with percentile bootstrap CIs over facts."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    n_layers = len(facts[0]["scores"]["resid"][0])
    for site in SITES:
        per_class: dict[str, list[np.ndarray]] = {name: [] for name in TOKEN_CLASSES}
        for fact in facts:
            effect = np.asarray(fact["scores"][site]) - fact["corrupted_prob"]
            classes = token_classes(fact["subject_span"], len(fact["tokens"]))
            for name, positions in classes.items():
                if positions:
                    per_class[name].append(effect[positions].mean(0))
        out[site] = {}
        for name, rows in per_class.items():
            values = np.asarray(rows) if rows else np.empty((0, n_layers))
            out[site][name] = {
                "n_facts": len(rows),
                "mean": np.round(values.mean(0), 6).tolist() if rows else [],
                "ci": [
                    list(bootstrap_ci(col, n_resamples=settings.n_bootstrap, seed=settings.seed))
                    for col in values.T
                ],
            }
    return out


def storing_band(effect: Sequence[float]) -> tuple[int | None, list[int]]:
    """The peak layer of a positive effect curve and the contiguous layers around it holding
    at least half the peak; (None, []) when no layer has a positive effect."""
    values = np.asarray(effect, dtype=np.float64)
    if values.size == 0 or values.max() <= 0:
        return None, []
    peak = int(values.argmax())
    low = high = peak
    while low > 0 and values[low - 1] >= values[peak] / 2:
        low -= 1
    while high < values.size - 1 and values[high + 1] >= values[peak] / 2:
        high += 1
    return peak, list(range(low, high + 1))


def run(
    model: Model,
    target: Target,
    settings: TraceSettings = TraceSettings(),
    *,
    items: Sequence[QAItem] | None = None,
    progress: bool = False,
) -> CausalTraceResult:
    """Trace the forget facts ``model`` knows (or ``items``) up to ``settings.max_facts``, each
    at its subject span: named by the item or the target's keywords, else inferred
    (`infer_subject`); items with neither are skipped and counted (`TracingError` when no item
    is left). ``progress`` shows a progress bar over the facts."""
    style = resolve_style(model, settings.prompt_style)
    known, generations = known_items(model, target, settings, items)
    candidates = {
        i.question: [] if target.subject_of(i) else subject_candidates(i.question, target.keywords)
        for i in known
    }
    traceable = [i for i in known if target.subject_of(i) or candidates[i.question]]
    if len(traceable) < len(known):
        log.warning("skipping %d item(s) with no subject to trace", len(known) - len(traceable))
    if not traceable:
        raise TracingError(_NO_SUBJECT.format("item to trace"))
    noise_basis, _ = noise_spans(target)
    noise_std = settings.noise_multiplier * embedding_std(model, target, style)
    facts = []
    for item, context in progress_bar(
        fact_contexts(model, settings, traceable, generations),
        desc="facts",
        unit="fact",
        enabled=progress,
    ):
        started = time.perf_counter()
        subject, considered = target.subject_of(item), None
        source: SubjectSource = "item" if item.subject is not None else "keyword"
        if subject is None:
            subject, considered = infer_subject(
                model, item, candidates[item.question], context, noise_std, settings
            )
            source = "inferred"
        fact = trace_fact(model, item, subject, noise_std, settings, context)
        facts.append(fact | {"subject_source": source, "subject_candidates": considered})
        log.info("traced %r in %.1f s", item.question, time.perf_counter() - started)
    average = average_effects(facts, settings)
    peak, band = storing_band(average["mlp"]["last_subject"]["mean"])
    return CausalTraceResult(
        model=model.identity(),
        target=target.name,
        settings=settings.record(prompt_style=style),
        noise_std=rounded(noise_std),
        noise_basis=noise_basis,
        n_layers=model.n_layers,
        facts=facts,
        n_skipped=len(known) - len(traceable),
        average=average,
        storing_peak=peak,
        storing_layers=band,
    )
