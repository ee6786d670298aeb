"""Embedding-space attacks: perturb the continuous input of the model instead of its text.

- ``noise``: Gaussian noise added to the input embeddings of the question's tokens, at several
  scales (in units of the root-mean-square entry of the model's embedding matrix, so that a
  scale of 1 adds a vector about as long as a token's embedding), ``n_samples`` draws per item;
  the mean accuracy over draws and the best-of-n accuracy (an item counts when any draw answers
  it) per scale. Nothing is fitted, so every forget item is scored.
- ``soft prompt`` (Schwinn et al., 2024): ``soft_tokens`` trainable embedding vectors put
  before the question, initialised from the embedding of "!", optimised by signed-gradient
  descent (step ``soft_step``, ``soft_iterations`` iterations) to raise the likelihood of the
  *fit* items' answers: one universal prompt, then scored on the held-out items.
- ``control`` (Chen et al., 2025: a soft prompt can make a model emit almost anything): the same
  optimisation on the fit items with their answers permuted across questions, scored on the
  held-out items against their true answers. What it reaches is what the optimisation puts in
  by itself (answer format, frequent answers), not knowledge the model kept.

Every model is attacked alike (original, unlearned, gold when given); the weights never change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from remnant.attacks.protocol import (
    AttackSettings,
    attack_models,
    correct_column,
    gap_recovery,
    generate_rows,
    model_work,
    paired_difference,
    plain_condition,
    split_forget,
)
from remnant.errors import TargetError
from remnant.models.model import Model
from remnant.progress import progress_bar
from remnant.results import Result
from remnant.scoring import (
    Style,
    accuracy_summary,
    adds_special_tokens,
    encode_answers,
    format_prompt,
    mean,
    resolve_style,
    rounded,
)
from remnant.scoring.batching import pad
from remnant.scoring.statistics import bootstrap_ci
from remnant.settings import InstanceOf, Interval, require
from remnant.targets.model import QAItem, Target

#: The text whose embedding initialises every soft-prompt vector (Schwinn et al.).
SOFT_INIT = "!"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingSettings(AttackSettings):
    """Noise scales and draws; soft-prompt length, step, iterations and batch (defaults from
    Schwinn et al.: 20 vectors from "!", signed-gradient steps of 0.001, 100 iterations)."""

    constraints = {
        "noise_scales": InstanceOf(tuple),
        "n_samples": Interval(int, 1),
        "soft_tokens": Interval(int, 0),
        "soft_step": Interval(float, 0, open_low=True),
        "soft_iterations": Interval(int, 1),
        "soft_batch_size": Interval(int, 1),
    }

    noise_scales: tuple[float, ...] = (0.25, 0.5, 1.0)
    """Noise standard deviations, in units of the embedding matrix's RMS entry (empty: no noise
    attack)."""
    n_samples: int = 5
    """Noise draws per item and scale."""
    soft_tokens: int = 20
    """Trainable vectors before the question (0: no soft-prompt attack)."""
    soft_step: float = 1e-3
    soft_iterations: int = 100
    soft_batch_size: int = 8
    """Fit items per optimisation step (drawn in seeded passes over the fit split)."""

    def check(self) -> None:
        require(
            all(float(s) > 0 for s in self.noise_scales),
            f"EmbeddingSettings.noise_scales must be positive, not {self.noise_scales!r}",
        )
        require(
            bool(self.noise_scales) or self.soft_tokens > 0,
            "EmbeddingSettings: give noise scales or soft tokens, or there is no attack to run",
        )


@dataclasses.dataclass(frozen=True)
class EmbeddingResult(Result):
    """Forget accuracy of every model under input-embedding noise, and held-out accuracy after
    a universal soft prompt beside its permuted-answer control."""

    kind = "embedding"

    models: dict[str, dict[str, Any]]
    target: str
    settings: dict[str, Any]
    split: dict[str, Any]
    """The fit / held-out split of the soft prompt."""
    noise: dict[str, Any] | None
    """``n`` (forget items), ``rms`` (per role: the embedding matrix's RMS entry, the unit of
    the scales), ``scales``: per scale (0 first: no noise) and role, ``mean`` (accuracy averaged
    over draws, 95% bootstrap CI over items), ``best_of_n`` (accuracy when any draw counts),
    ``per_sample`` (accuracy of each draw) and ``examples`` (the first draw's generations for
    the first three items). None when no scale was asked."""
    soft_prompt: dict[str, Any] | None
    """Per role: ``plain`` (held-out accuracy with no soft prompt), ``attack`` and ``control``
    (held-out accuracy after the soft prompt optimised on the fit split's true answers, and on
    its permuted answers, with per-item generations), ``loss`` and ``control_loss`` (answer
    loss in nats per token at each iteration); ``gap_recovery`` of the unlearned model's attack
    accuracy, ``above_control`` (its attack minus control accuracy on the same items, 95% CI)
    and ``permutation`` (the fit question each answer was moved to). None when soft_tokens is
    0."""
    seconds: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """Per noise scale each model's mean and best-of-n accuracy; the soft prompt's attack
        and control accuracy per model and its recovery."""
        out: dict[str, Any] = {}
        if self.noise is not None:
            out["noise"] = [
                {
                    "scale": scale["scale"],
                    **{
                        role: {
                            "mean": r["mean"]["accuracy"],
                            "best_of_n": r["best_of_n"]["accuracy"],
                        }
                        for role, r in scale["roles"].items()
                    },
                }
                for scale in self.noise["scales"]
            ]
        if self.soft_prompt is not None:
            out["soft_prompt"] = {
                role: {
                    k: self.soft_prompt["roles"][role][k]["accuracy"]
                    for k in ("plain", "attack", "control")
                }
                for role in self.soft_prompt["roles"]
            } | {
                "gap_recovery": self.soft_prompt["gap_recovery"],
                "above_control": self.soft_prompt["above_control"],
            }
        return out


def run(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: EmbeddingSettings = EmbeddingSettings(),
    *,
    gold: Model | None = None,
    progress: bool = False,
) -> EmbeddingResult:
    """Noise on the question's input embeddings (every forget item) and a universal soft
    prompt with its permuted-answer control (held-out items), on every model."""
    if not target.forget:
        raise TargetError(f"target {target.name!r} has no forget items to attack")
    models = attack_models(original, unlearned, gold, "run an embedding-space attack")
    style = resolve_style(original, settings.prompt_style)
    split = split_forget(target, settings.held_out_fraction, settings.seed)
    permuted = _permuted(split.fit, settings.seed) if settings.soft_tokens else []
    noise: dict[str, Any] = {"scales": {}, "rms": {}}
    soft: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    position = {id(item): k for k, item in enumerate(target.forget)}
    for role, model in models.items():
        started = time.perf_counter()

        def compute(model: Model = model, role: str = role) -> dict[str, Any]:
            plain = generate_rows(
                model, plain_condition(model, target.forget, style), style, settings
            )
            out: dict[str, Any] = {}
            if settings.noise_scales:
                out["rms"] = rounded(_embedding_rms(model))
                out["scales"] = _noise(model, target.forget, plain, style, settings, role, progress)
            if settings.soft_tokens:
                held = [plain[position[id(item)]] for item in split.held_out]
                out["soft"] = _soft_prompt(
                    model, split, held, permuted, style, settings, role, progress
                )
            return out

        work = model_work("embedding", model, original, target, settings, compute, style=style)
        if settings.noise_scales:
            noise["rms"][role], noise["scales"][role] = work["rms"], work["scales"]
        if settings.soft_tokens:
            soft[role] = work["soft"]
        seconds[role] = round(time.perf_counter() - started, 2)
    return EmbeddingResult(
        models={role: model.identity() for role, model in models.items()},
        target=target.name,
        settings=settings.record(prompt_style=style),
        split=split.record(),
        noise=_noise_record(noise, len(target.forget), settings) if settings.noise_scales else None,
        soft_prompt=_soft_record(soft, split.fit, permuted, settings) if soft else None,
        seconds=seconds,
    )


def question_positions(model: Model, item: QAItem, style: Style) -> tuple[list[int], int, int]:
    """The token ids of ``item``'s plain prompt and the token span [start, end) of its question
    in them (tokens whose characters overlap the question's last occurrence in the prompt)."""
    prompt = format_prompt(model, item.question, style)
    encoded = model.tokenizer(
        prompt, add_special_tokens=adds_special_tokens(style), return_offsets_mapping=True
    )
    first = prompt.rfind(item.question)
    last = first + len(item.question)
    inside = [
        k for k, (a, b) in enumerate(encoded["offset_mapping"]) if a < last and b > first and b > a
    ]
    if first < 0 or not inside:
        raise TargetError(f"cannot find the question {item.question!r} in its own prompt")
    return list(encoded["input_ids"]), inside[0], inside[-1] + 1


def _embedding_rms(model: Model) -> float:
    weight = model.hf_model.get_input_embeddings().weight
    return float(weight.detach().float().pow(2).mean().sqrt())


def _noise(
    model: Model,
    items: Sequence[QAItem],
    plain: list[dict[str, Any]],
    style: Style,
    settings: EmbeddingSettings,
    role: str,
    progress: bool,
) -> dict[str, list[list[dict[str, Any]]]]:
    """Per scale (0 first: the ``plain`` rows, no noise), per draw, the per-item rows of greedy
    answers with the question's embeddings noised; each item's noise is seeded by (seed, scale,
    draw, item), so batching does not change it."""
    spans = [question_positions(model, item, style)[1:] for item in items]
    condition = plain_condition(model, items, style)
    rms = _embedding_rms(model)
    out: dict[str, list[list[dict[str, Any]]]] = {"0": [plain]}
    bar = progress_bar(
        total=len(settings.noise_scales) * settings.n_samples,
        desc=f"{role}: embedding noise", unit="draw", enabled=progress,
    )  # fmt: skip
    with bar:
        for s, scale in enumerate(settings.noise_scales, start=1):
            draws = []
            for draw in range(settings.n_samples):
                edit = _noise_edit(spans, scale * rms, f"{settings.seed}-{s}-{draw}")
                draws.append(generate_rows(model, condition, style, settings, edit=edit))
                bar.update(1)
            out[f"{scale:g}"] = draws
    return out


def _noise_edit(spans: Sequence[tuple[int, int]], sigma: float, seed: str):
    def edit(batch: list[int], embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = embeds.clone()
        offsets = (mask == 0).sum(-1).tolist()  # left padding
        for row, i in enumerate(batch):
            start, end = spans[i]
            generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}-{i}".encode()))
            noise = torch.randn(end - start, embeds.shape[-1], generator=generator) * sigma
            span = slice(offsets[row] + start, offsets[row] + end)
            out[row, span] += noise.to(out.dtype).to(out.device)
        return out

    return edit


def _noise_record(noise: dict[str, Any], n: int, settings: EmbeddingSettings) -> dict[str, Any]:
    ci = {"n_resamples": settings.n_bootstrap, "seed": settings.seed}
    scales = []
    for scale in next(iter(noise["scales"].values())):
        roles = {}
        for role, by_scale in noise["scales"].items():
            draws = by_scale[scale]
            per_item = np.mean([[row["correct"] for row in rows] for rows in draws], axis=0)
            best = np.max([[row["correct"] for row in rows] for rows in draws], axis=0)
            roles[role] = {
                "mean": {"accuracy": mean(per_item), "ci": list(bootstrap_ci(per_item, **ci))},
                "best_of_n": {"accuracy": mean(best), "ci": list(bootstrap_ci(best, **ci))},
                "per_sample": [mean([row["correct"] for row in rows]) for rows in draws],
                "examples": [
                    {"question": row["question"], "generation": row["generation"]}
                    for row in draws[0][:3]
                ],
            }
        scales.append({"scale": float(scale), "roles": roles})
    return {"n": n, "rms": noise["rms"], "scales": scales}


def _permuted(items: Sequence[QAItem], seed: int) -> list[int]:
    """Per fit item, the index of the item whose answer it is given in the control: a seeded
    cyclic shift of a seeded order, so no item keeps its own answer (when there are two)."""
    order = list(range(len(items)))
    random.Random(f"{seed}-permuted").shuffle(order)
    shifted = order[1:] + order[:1]
    moved = dict(zip(order, shifted))
    return [moved[i] for i in range(len(items))]


@contextlib.contextmanager
def _frozen(model: Model) -> Iterator[None]:
    """No weight of ``model`` takes gradients inside (flags restored after)."""
    flags = {p: p.requires_grad for p in model.hf_model.parameters()}
    for p in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def _soft_prompt(
    model: Model,
    split: Any,
    plain: list[dict[str, Any]],
    permuted: list[int],
    style: Style,
    settings: EmbeddingSettings,
    role: str,
    progress: bool,
) -> dict[str, Any]:
    """Held-out accuracy of ``model`` plainly (its ``plain`` rows of the held-out items), after a
    universal soft prompt optimised on the fit items' answers, and after one optimised on their
    permuted answers."""
    init = model.tokenizer(SOFT_INIT, add_special_tokens=False).input_ids[0]
    fit = [slotted_prompt(model, item, style, init, settings.soft_tokens) for item in split.fit]
    held = [
        slotted_prompt(model, item, style, init, settings.soft_tokens) for item in split.held_out
    ]
    answers = encode_answers(model, [item.answer for item in split.fit], style)
    out: dict[str, Any] = {"plain": {**accuracy_summary(plain, settings), "items": plain}}
    for name, targets in (("attack", answers), ("control", [answers[j] for j in permuted])):
        soft, loss = optimise_soft_prompt(
            model, fit, targets, init, settings, f"{role}: soft prompt {name}", progress
        )
        condition = dataclasses.replace(
            plain_condition(model, split.held_out, style), name=f"soft prompt {name}"
        )
        rows = _generate_in_slots(model, condition, held, soft, style, settings)
        out[name] = {**accuracy_summary(rows, settings), "items": rows}
        out["loss" if name == "attack" else "control_loss"] = loss
    return out


def slotted_prompt(
    model: Model, item: QAItem, style: Style, init: int, m: int
) -> tuple[list[int], int]:
    """``item``'s prompt ids with ``m`` copies of the ``init`` token before the question, and
    where they start."""
    ids, start, _ = question_positions(model, item, style)
    return ids[:start] + [init] * m + ids[start:], start


def optimise_soft_prompt(
    model: Model,
    prompts: Sequence[tuple[list[int], int]],
    answers: Sequence[list[int]],
    init: int,
    settings: EmbeddingSettings,
    desc: str,
    progress: bool,
) -> tuple[torch.Tensor, list[float]]:
    """A universal soft prompt: signed-gradient descent on the mean answer NLL per token over
    batches of the (prompt, answer) pairs. Returns the vectors and the loss per iteration."""
    embed = model.hf_model.get_input_embeddings()
    m = settings.soft_tokens
    with torch.no_grad():
        soft = embed(torch.tensor([init] * m, device=model.device)).detach().clone()
    soft.requires_grad_(True)
    rng = random.Random(f"{settings.seed}-soft")
    order: list[int] = []
    curve: list[float] = []
    bar = progress_bar(total=settings.soft_iterations, desc=desc, unit="step", enabled=progress)
    with bar, _frozen(model):
        for _ in range(settings.soft_iterations):
            while len(order) < min(settings.soft_batch_size, len(prompts)):
                order += rng.sample(range(len(prompts)), len(prompts))
            batch, order = order[: settings.soft_batch_size], order[settings.soft_batch_size :]
            loss = _answer_nll(
                model, [prompts[i] for i in batch], [answers[i] for i in batch], soft
            )
            (grad,) = torch.autograd.grad(loss, soft)
            with torch.no_grad():
                soft -= settings.soft_step * grad.sign()
            curve.append(rounded(loss.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return soft.detach(), curve


def _answer_nll(
    model: Model,
    prompts: Sequence[tuple[list[int], int]],
    answers: Sequence[list[int]],
    soft: torch.Tensor,
) -> torch.Tensor:
    """Mean over examples of the answer's NLL per token, the soft vectors in each prompt's
    slots (right padding)."""
    rows = [ids + answer for (ids, _), answer in zip(prompts, answers)]
    ids, mask = pad(rows, model.tokenizer.pad_token_id, "right")
    ids, mask = ids.to(model.device), mask.to(model.device)
    embeds = model.hf_model.get_input_embeddings()(ids)
    m = soft.shape[0]
    slots = torch.zeros(ids.shape, dtype=torch.bool, device=model.device)
    for row, (_, start) in enumerate(prompts):
        slots[row, start : start + m] = True
    embeds = embeds.masked_scatter(slots[..., None], soft.expand(len(rows), m, -1).to(embeds.dtype))
    logits = model.hf_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
    scored = torch.zeros_like(picked, dtype=torch.bool)
    for row, ((prompt, _), answer) in enumerate(zip(prompts, answers)):
        scored[row, len(prompt) - 1 : len(prompt) - 1 + len(answer)] = True
    per_example = -(picked * scored).sum(-1) / scored.sum(-1)
    return per_example.mean()


def _generate_in_slots(
    model: Model,
    condition: Any,
    prompts: Sequence[tuple[list[int], int]],
    soft: torch.Tensor,
    style: Style,
    settings: EmbeddingSettings,
) -> list[dict[str, Any]]:
    """Greedy answers to the condition's items from their slotted prompts, the soft vectors in
    the slots."""
    m = soft.shape[0]

    def edit(batch: list[int], embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = embeds.clone()
        offsets = (mask == 0).sum(-1).tolist()
        for row, i in enumerate(batch):
            start = offsets[row] + prompts[i][1]
            out[row, start : start + m] = soft.to(out.dtype)
        return out

    return generate_rows(model, condition, style, settings, edit=edit, ids=[p for p, _ in prompts])


def _soft_record(
    soft: dict[str, Any], fit: Sequence[QAItem], permuted: list[int], settings: EmbeddingSettings
) -> dict[str, Any]:
    unlearned = soft["unlearned"]
    column = {k: correct_column(unlearned[k]) for k in ("plain", "attack", "control")}
    original_plain = correct_column(soft["original"]["plain"])
    return {
        "roles": soft,
        "gap_recovery": gap_recovery(
            column["attack"],
            column["plain"],
            original_plain,
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
        ),  # fmt: skip
        "above_control": paired_difference(
            column["attack"],
            column["control"],
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
        ),  # fmt: skip
        "permutation": [
            {"question": item.question, "answer_of": fit[j].question}
            for item, j in zip(fit, permuted)
        ],
    }
