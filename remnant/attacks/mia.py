"""Membership inference: can the model's likelihood of a text still tell forget texts from
texts that are not in the forget set?

Every text is scored by how likely the model finds it (each score: higher = more member-like):

- ``loss``: the mean log-likelihood of its tokens (nats per token; minus the usual LOSS attack's
  loss, Yeom et al., 2018);
- ``zlib``: that mean log-likelihood divided by the length in bytes of the zlib-compressed
  text (Carlini et al., 2021), which discounts texts that are predictable by their form;
- ``min_k``: Min-K% (Shi et al., 2024), the mean of the lowest k% of the per-token
  log-likelihoods;
- ``min_k_pp``: Min-K%++ (Zhang et al., 2024), the mean of the lowest k% of the per-token
  z-scores ``z_t = (log p(x_t) − μ_t) / σ_t``, where μ_t and σ_t² are the mean and variance of
  ``log p`` over the vocabulary under the model's own next-token distribution at position t.
  The primary score.

Texts come in comparisons of members against non-members: ``passages`` (the target's forget
passages against its unrelated passages) and ``qa`` (forget QA items against retain QA items,
each as the raw text ``Question: …\\nAnswer: …``). Each comparison is reported per model as
AUROC with a stratified bootstrap 95% CI, TPR at 5% FPR and the ROC curve.

An AUROC of 0.5 means the model's likelihood does not tell the two sets apart. After
unlearning, an AUROC far *below* 0.5 means the forget texts became less likely than the
non-members: the unlearning overshot, and a detector can find the forget set by exactly that
(over-unlearning). The non-members of ``qa`` are retain items the models were trained on, so
there even a model that never saw the forget set scores below 0.5; the gold model's AUROC is
the reference when it is given.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import zlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from remnant.attacks.protocol import AttackSettings, attack_models, model_work
from remnant.errors import TargetError
from remnant.models.model import Model
from remnant.progress import progress_bar
from remnant.results import Result
from remnant.scoring import pad, rounded
from remnant.scoring.batching import length_batches, padded_logits
from remnant.settings import InstanceOf, Interval, OneOf, require
from remnant.targets.model import Target
from remnant.targets.synthetic import qa_text

logger = logging.getLogger(__name__)

TextSet = Literal["both", "passages", "qa"]
TEXT_SETS: tuple[str, ...] = ("both", "passages", "qa")

#: The per-text scores, each higher for texts that look more like members.
SCORES: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_pp")
#: The score that flags over-unlearning and that the ROC figure draws.
PRIMARY = "min_k_pp"
#: The false-positive rate at which the true-positive rate is reported.
FPR_LEVEL = 0.05

#: Per comparison: what its members and its non-members are.
COMPARISONS: dict[str, tuple[str, str]] = {
    "passages": ("forget passages", "unrelated passages"),
    "qa": ("forget QA items", "retain QA items"),
}
#: Display names of the scores.
SCORE_NAMES = {"loss": "LOSS", "zlib": "zlib ratio", "min_k": "Min-K%", "min_k_pp": "Min-K%++"}
_K = Interval(float, 0, 1, open_low=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MIASettings(AttackSettings):
    """Which texts are compared, the fraction k of Min-K% and Min-K%++, batching and the
    bootstrap. The inherited split, prompt style and generation settings are not used: texts
    are scored as raw text, with the tokenizer's special tokens."""

    constraints = {"k": _K, "k_sweep": InstanceOf(tuple), "texts": OneOf(TEXT_SETS)}

    k: float = 0.2
    """Fraction of a text's tokens, the least likely ones, whose mean is its Min-K% and
    Min-K%++ score (at least one token)."""
    k_sweep: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    """Values of k at which the AUROC of Min-K% and Min-K%++ is also reported."""
    texts: TextSet = "both"
    """The comparisons to run: ``passages``, ``qa``, or ``both``."""

    def check(self) -> None:
        super().check()
        require(
            bool(self.k_sweep) and all(_K.accepts(k) for k in self.k_sweep),
            f"MIASettings.k_sweep must be a non-empty tuple of numbers > 0 and <= 1, "
            f"not {self.k_sweep!r}",
        )


@dataclasses.dataclass(frozen=True)
class MIAResult(Result):
    """Membership inference: per comparison (members vs non-members) and model, how well each
    likelihood score tells the two apart (AUROC, TPR at 5% FPR, ROC curve), and flags for
    over-unlearning."""

    kind = "mia"

    models: dict[str, dict[str, Any]]
    """Identity of each model by role: ``original``, ``unlearned`` and, when given, ``gold``
    (a model that never saw the forget data)."""
    target: str
    """The target's name."""
    settings: dict[str, Any]
    """The `MIASettings` used."""
    comparisons: dict[str, dict[str, Any]]
    """Per comparison run (``passages``, ``qa``): ``members`` and ``non_members`` (what they
    are), ``n_members``, ``n_non_members``, and ``roles[role]``: ``scores[name]`` for each of
    `SCORES` (``auroc``; its stratified bootstrap 95% ``ci``; ``tpr_at_5_fpr``; ``roc``: the
    ROC curve's ``fpr`` and ``tpr`` lists), ``k_sweep`` (per k: ``k`` and the AUROC of
    ``min_k`` and ``min_k_pp``), ``below_chance`` (the primary score's AUROC CI lies below
    0.5), ``over_unlearning`` (for the unlearned model: below chance and, when a gold model is
    given, below the gold model's CI too; None for the other roles), and ``texts`` (per text:
    its first 80 characters as ``text``, ``member``, ``n_tokens`` scored and each score)."""
    skipped: dict[str, str]
    """Comparisons asked for but not run, each with the reason (fewer than 2 texts a side)."""
    flags: list[str]
    """Over-unlearning findings, one sentence each."""
    seconds: dict[str, float]
    """Wall time of the scoring, by model role."""

    def summary(self) -> dict[str, Any]:
        """Per comparison and role, each score's AUROC, CI and TPR at 5% FPR; and the flags."""
        return {
            "comparisons": {
                name: {
                    role: {
                        score: {key: values[key] for key in ("auroc", "ci", "tpr_at_5_fpr")}
                        for score, values in record["scores"].items()
                    }
                    for role, record in comparison["roles"].items()
                }
                for name, comparison in self.comparisons.items()
            },
            "flags": self.flags,
        }


def membership_scores(
    model: Model,
    texts: Sequence[str],
    settings: MIASettings = MIASettings(),
    *,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Per text, every membership score (higher = more member-like; see the module docstring):
    ``loss``, ``zlib``, ``min_k`` and ``min_k_pp`` at ``settings.k``, ``min_k@{k}`` and
    ``min_k_pp@{k}`` for every k of the sweep (k written with ``:g``), and ``n_tokens`` (how
    many tokens were scored: every token after the first).

    Texts are encoded with the tokenizer's special tokens and cut to the model's context
    length. One forward pass per batch gives, at every position, the log-probability of the
    actual next token and the mean μ and variance σ² = Σ p·(log p − μ)² (= Σ p·(log p)² − μ²)
    of log p over the vocabulary; σ is floored at 1e-6 against division by zero."""
    ids = [model.tokenizer(text).input_ids for text in texts]
    limit = getattr(model.hf_model.config, "max_position_embeddings", None)
    if limit and any(len(row) > limit for row in ids):
        logger.warning("cutting texts longer than %s's %d positions", model.name, limit)
        ids = [row[:limit] for row in ids]
    for text, row in zip(texts, ids):
        if len(row) < 2:
            raise TargetError(
                f"text {text[:80]!r} is {len(row)} token(s) long with {model.name}'s tokenizer; "
                "membership scores need at least two (the first is only context)"
            )
    ks = list(dict.fromkeys((settings.k, *settings.k_sweep)))
    names = ["loss", "n_tokens"] + [f"{s}@{k:g}" for s in ("min_k", "min_k_pp") for k in ks]
    out: dict[str, list[float]] = {name: [0.0] * len(texts) for name in names}
    pad_id = model.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    bar = progress_bar(
        total=len(texts), desc=f"membership ({model.name})", unit="text", enabled=progress
    )
    with bar:
        for batch in length_batches([len(row) for row in ids], settings.batch_size):
            stats = _token_statistics(model, [ids[i] for i in batch], pad_id)
            for name, values in _text_scores(*stats, ks).items():
                for i, value in zip(batch, values):
                    out[name][i] = value
            bar.update(len(batch))
    out["zlib"] = [
        loss / len(zlib.compress(text.encode("utf-8"))) for loss, text in zip(out["loss"], texts)
    ]
    out["min_k"] = out[f"min_k@{settings.k:g}"]
    out["min_k_pp"] = out[f"min_k_pp@{settings.k:g}"]
    return out


def _token_statistics(
    model: Model, rows: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a batch of token rows (right-padded): per predicted position (every token after the
    first), the log-probability of the actual token, its Min-K%++ z-score, and whether the
    position holds a real token; each (batch, width − 1)."""
    ids, mask = pad(rows, pad_id, "right")
    with torch.no_grad():
        logp_all = torch.log_softmax(padded_logits(model, ids, mask)[:, :-1], dim=-1)
        chosen = logp_all.gather(-1, ids[:, 1:, None].to(logp_all.device))[..., 0]
        p = logp_all.exp()
        mu = torch.where(p > 0, p * logp_all, 0.0).sum(-1)
        var = torch.where(p > 0, p * (logp_all - mu[..., None]) ** 2, 0.0).sum(-1)
        z = (chosen - mu) / var.sqrt().clamp_min(1e-6)
    return chosen.cpu(), z.cpu(), mask[:, 1:].bool()


def _text_scores(
    chosen: torch.Tensor, z: torch.Tensor, valid: torch.Tensor, ks: Sequence[float]
) -> dict[str, list[float]]:
    """Per row: mean token log-probability (``loss``), ``n_tokens``, and for every k the mean of
    the lowest max(1, ⌊k·n⌋) log-probabilities (``min_k@k``) and z-scores (``min_k_pp@k``)."""
    n = valid.sum(-1)
    scores = {
        "loss": ((chosen.double() * valid).sum(-1) / n).tolist(),
        "n_tokens": n.tolist(),
    }
    for name, values in (("min_k", chosen), ("min_k_pp", z)):
        lowest = torch.where(valid, values.double(), math.inf).sort(-1).values.cumsum(-1)
        for k in ks:
            count = torch.floor(k * n.double() + 1e-9).long().clamp(min=1)
            scores[f"{name}@{k:g}"] = (lowest.gather(-1, count[:, None] - 1)[:, 0] / count).tolist()
    return scores


def auroc_with_ci(
    members: Sequence[float],
    non_members: Sequence[float],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """How well a score (higher = member) separates members from non-members: ``auroc``
    (`sklearn.metrics.roc_auc_score`; ties count one half), its 95% percentile bootstrap ``ci``
    (members and non-members resampled separately, so every resample keeps both sizes),
    ``tpr_at_5_fpr`` (the largest true-positive rate among the ROC points whose false-positive
    rate is at most 5%: a threshold that attains it exists; not interpolated), and ``roc``:
    the curve's ``fpr`` and ``tpr`` points (`sklearn.metrics.roc_curve`)."""
    pos = np.asarray(members, dtype=np.float64)
    neg = np.asarray(non_members, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("an AUROC needs at least one member and one non-member")
    labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    values = np.r_[pos, neg]
    auroc = roc_auc_score(labels, values)
    fpr, tpr, _ = roc_curve(labels, values)
    # A resample's AUROC is the mean of the pair wins over the pairs it draws (Mann-Whitney):
    # with draw counts c (members) and d (non-members), c·W·d / (n_pos · n_neg).
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    rng = np.random.default_rng(seed)
    draws_pos = rng.multinomial(pos.size, np.full(pos.size, 1 / pos.size), size=n_bootstrap)
    draws_neg = rng.multinomial(neg.size, np.full(neg.size, 1 / neg.size), size=n_bootstrap)
    resampled = ((draws_pos @ wins) * draws_neg).sum(1) / (pos.size * neg.size)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {
        "auroc": rounded(auroc),
        "ci": [rounded(low), rounded(high)],
        "tpr_at_5_fpr": rounded(tpr[fpr <= FPR_LEVEL].max()),
        "roc": {"fpr": [rounded(v) for v in fpr], "tpr": [rounded(v) for v in tpr]},
    }


def _text_sets(target: Target, texts: TextSet = "both") -> tuple[dict[str, Any], dict[str, str]]:
    """The comparisons ``texts`` asks for, as ``{name: (members, non_members)}``, and the
    skipped ones with the reason (fewer than 2 texts on a side)."""
    available = {
        "passages": (list(target.forget_passages), list(target.unrelated_passages)),
        "qa": (
            [qa_text(item.question, item.answer) for item in target.forget],
            [qa_text(item.question, item.answer) for item in target.retain],
        ),
    }
    chosen, skipped = {}, {}
    for name in COMPARISONS if texts == "both" else (texts,):
        members, non_members = available[name]
        if min(len(members), len(non_members)) < 2:
            what, other = COMPARISONS[name]
            skipped[name] = (
                f"needs at least 2 {what} and 2 {other}; target {target.name!r} has "
                f"{len(members)} and {len(non_members)}"
            )
        else:
            chosen[name] = (members, non_members)
    return chosen, skipped


def run(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: MIASettings = MIASettings(),
    *,
    gold: Model | None = None,
    progress: bool = False,
) -> MIAResult:
    """Membership inference on every model: per comparison of forget texts against other
    texts (`COMPARISONS`), the AUROC of each score with its CI, TPR at 5% FPR, ROC curve and
    the Min-K% / Min-K%++ k sweep; over-unlearning is flagged (see `MIAResult.comparisons`)."""
    models = attack_models(original, unlearned, gold, "compare membership scores")
    chosen, skipped = _text_sets(target, settings.texts)
    if not chosen:
        raise TargetError(
            f"membership inference has nothing to compare: {'; '.join(skipped.values())}. "
            "Add forget_passages and unrelated_passages, or forget and retain QA items"
        )
    texts = [text for members, others in chosen.values() for text in (*members, *others)]
    scores, seconds = {}, {}
    for role, model in models.items():
        started = time.perf_counter()
        scores[role] = model_work(
            "mia", model, original, target, settings,
            lambda model=model: membership_scores(model, texts, settings, progress=progress),
        )  # fmt: skip
        seconds[role] = round(time.perf_counter() - started, 2)
    comparisons, flags = {}, []
    start = 0
    for name, (members, others) in chosen.items():
        span = slice(start, start + len(members) + len(others))
        start = span.stop
        is_member = [True] * len(members) + [False] * len(others)
        roles = {
            role: _role_record(
                texts[span], is_member, {s: v[span] for s, v in role_scores.items()}, settings
            )
            for role, role_scores in scores.items()
        }
        what, other = COMPARISONS[name]
        flag = _over_unlearning(name, roles)
        if flag:
            flags.append(flag)
        comparisons[name] = {
            "members": what,
            "non_members": other,
            "n_members": len(members),
            "n_non_members": len(others),
            "roles": roles,
        }
    return MIAResult(
        models={role: model.identity() for role, model in models.items()},
        target=target.name,
        settings=settings.record(),
        comparisons=comparisons,
        skipped=skipped,
        flags=flags,
        seconds=seconds,
    )


def _role_record(
    texts: Sequence[str],
    is_member: Sequence[bool],
    scores: dict[str, list[float]],
    settings: MIASettings,
) -> dict[str, Any]:
    """One model's AUROCs, k sweep and per-text scores on one comparison."""
    labels = np.asarray(is_member, dtype=bool)
    record: dict[str, Any] = {
        "scores": {
            name: auroc_with_ci(
                np.asarray(scores[name])[labels],
                np.asarray(scores[name])[~labels],
                n_bootstrap=settings.n_bootstrap,
                seed=settings.seed,
            )
            for name in SCORES
        },
        "k_sweep": [
            {"k": k}
            | {
                s: rounded(roc_auc_score(labels, scores[f"{s}@{k:g}"]))
                for s in ("min_k", "min_k_pp")
            }
            for k in settings.k_sweep
        ],
    }
    record["below_chance"] = bool(record["scores"][PRIMARY]["ci"][1] < 0.5)
    record["over_unlearning"] = None
    record["texts"] = [
        {"text": text[:80], "member": member, "n_tokens": int(scores["n_tokens"][i])}
        | {name: rounded(scores[name][i]) for name in SCORES}
        for i, (text, member) in enumerate(zip(texts, is_member))
    ]
    return record


def _over_unlearning(comparison: str, roles: dict[str, dict[str, Any]]) -> str | None:
    """Mark the unlearned model's record: over-unlearning when its primary-score AUROC CI lies
    below 0.5 and, when a gold model is given, below the gold model's CI. Returns the flag's
    sentence, or None."""
    unlearned, gold = roles["unlearned"], roles.get("gold")
    score = unlearned["scores"][PRIMARY]
    flagged = unlearned["below_chance"] and (
        gold is None or score["ci"][1] < gold["scores"][PRIMARY]["ci"][0]
    )
    unlearned["over_unlearning"] = flagged
    if not flagged:
        return None
    what, other = COMPARISONS[comparison]
    found = f"{SCORE_NAMES[PRIMARY]} AUROC {_interval(score)}"
    if gold is not None:
        found += f"; the gold model's is {_interval(gold['scores'][PRIMARY])}"
    caveat = (
        "; but without a gold model to compare with this can also be exact unlearning: the "
        "retain items were trained on, so a model that never saw the forget set scores below "
        "0.5 here too"
        if comparison == "qa" and gold is None
        else ""
    )
    return (
        f"unlearned: {what} are less likely than {other} ({found}): over-unlearning; a "
        f"detector can tell the forget set from this{caveat}"
    )


def _interval(score: dict[str, Any]) -> str:
    low, high = score["ci"]
    return f"{score['auroc']:.2f} [{low:.2f}, {high:.2f}]"
