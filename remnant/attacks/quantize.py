"""Quantization: does rounding the weights bring forgotten answers back?

Zhang et al. (ICLR 2025) measured that 4-bit quantization of unlearned models restores much of
the forgotten knowledge (from 21% to 83% retained, averaged over methods), while 8-bit did
little: unlearning by small weight changes can fall below the quantization step and be rounded
away. Here a copy of each model has the weights of every linear layer inside its decoder
layers rounded to nearest (RTN) at each bit width and scheme, with one scale (and, asymmetric,
one zero point) per group of ``group_size`` consecutive input weights of an output row, then
dequantized back to floats; embeddings, norms and the output head are kept. Pure torch, so it
runs on a CPU for any architecture.

Nothing is fitted on forget data, so every forget item is scored, with the retain items beside
them: the unlearned model quantized against itself in full precision (gap recovery), and the
original (and gold) model quantized alike as controls for what rounding costs by itself.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from remnant.attacks.protocol import (
    AttackSettings,
    attack_models,
    correct_column,
    gap_recovery,
    model_work,
    paired_difference,
    reset_weights,
    score_plain_splits,
)
from remnant.errors import TargetError
from remnant.models.loading import load_copy
from remnant.models.model import LAYER_NAME, Model
from remnant.progress import progress_bar
from remnant.results import Result
from remnant.scoring import resolve_style
from remnant.settings import InstanceOf, Interval, require
from remnant.targets.model import Target

SCHEMES = ("symmetric", "asymmetric")
#: The full-precision condition every quantized one is compared with.
FULL = "full precision"


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeSettings(AttackSettings):
    """Bit widths, schemes and group size of the round-to-nearest quantization; the inherited
    split setting is not used (no forget data is fitted: every forget item is scored)."""

    constraints = {
        "bits": InstanceOf(tuple),
        "schemes": InstanceOf(tuple),
        "group_size": Interval(int, 1),
    }

    bits: tuple[int, ...] = (8, 4)
    schemes: tuple[str, ...] = SCHEMES
    group_size: int = 128
    """Consecutive input weights of one output row that share a scale (the last group of a row
    may be shorter)."""

    def check(self) -> None:
        require(
            bool(self.bits) and all(isinstance(b, int) and 2 <= b <= 16 for b in self.bits),
            f"QuantizeSettings.bits must be integers from 2 to 16, not {self.bits!r}",
        )
        require(
            bool(self.schemes) and set(self.schemes) <= set(SCHEMES),
            f"QuantizeSettings.schemes must name some of {', '.join(SCHEMES)}, not "
            f"{self.schemes!r}",
        )


def quantize_weight(weight: torch.Tensor, bits: int, scheme: str, group_size: int) -> torch.Tensor:
    """``weight`` (out, in) rounded to nearest on a ``bits``-bit grid per group of
    ``group_size`` input weights and dequantized: symmetric (scale max|w| / (2^(b-1) − 1),
    levels −2^(b-1)..2^(b-1)−1) or asymmetric (scale (max − min) / (2^b − 1) over the group's
    range widened to hold 0, integer zero point, levels 0..2^b − 1).
    Returns a new tensor of the same shape and dtype."""
    rows, cols = weight.shape
    n_groups = -(-cols // group_size)
    padded = torch.nn.functional.pad(weight.float(), (0, n_groups * group_size - cols))
    groups = padded.view(rows, n_groups, group_size)
    if scheme == "symmetric":
        top = 2 ** (bits - 1) - 1
        scale = groups.abs().amax(-1, keepdim=True) / top
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        values = torch.clamp(torch.round(groups / scale), -top - 1, top) * scale
    else:  # the range always holds 0 (so padding cannot widen it, and 0 stays exact)
        low = groups.amin(-1, keepdim=True).clamp(max=0)
        high = groups.amax(-1, keepdim=True).clamp(min=0)
        scale = (high - low) / (2**bits - 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-low / scale)
        levels = torch.clamp(torch.round(groups / scale) + zero, 0, 2**bits - 1)
        values = (levels - zero) * scale
    return values.view(rows, -1)[:, :cols].to(weight.dtype)


def quantize_model(model: Model, bits: int, scheme: str, group_size: int) -> list[str]:
    """Quantize (`quantize_weight`) in place every 2-D weight inside ``model``'s decoder
    layers (the linear layers; embeddings, norms and the output head are kept). Returns the
    names of the weights changed."""
    names = [
        name
        for name, tensor in model.parameters.items()
        if LAYER_NAME.search(name) and name.endswith(".weight") and tensor.dim() == 2
    ]
    with torch.no_grad():
        for name in names:
            tensor = model.parameters[name]
            tensor.copy_(quantize_weight(tensor, bits, scheme, group_size))
    return names


@dataclasses.dataclass(frozen=True)
class QuantizeResult(Result):
    """Forget and retain accuracy of every model in full precision and quantized at each bit
    width and scheme, and the gap recovery of the quantized unlearned model."""

    kind = "quantize"

    models: dict[str, dict[str, Any]]
    """Identity of each model by role, taken before the attack (which quantizes copies)."""
    target: str
    settings: dict[str, Any]
    conditions: list[dict[str, Any]]
    """Per condition (the first is full precision): ``name``, ``bits`` and ``scheme`` (None in
    full precision), ``n_weights`` (weight matrices quantized), ``scores[role]`` with
    ``forget`` and ``retain`` accuracy summaries (with per-item generations; None for a split the
    target lacks), and
    ``retain_change[role]`` (retain accuracy minus full precision's, 95% bootstrap CI);
    ``gap_recovery`` of the unlearned model's forget accuracy."""
    seconds: dict[str, float]

    def summary(self) -> list[dict[str, Any]]:
        """Per condition: each model's forget and retain accuracy, and gap recovery."""
        return [
            {
                "condition": c["name"],
                **{
                    role: {
                        split: s[split]["accuracy"] for split in ("forget", "retain") if s[split]
                    }
                    for role, s in c["scores"].items()
                },
                "gap_recovery": c["gap_recovery"],
            }
            for c in self.conditions
        ]


def _model_scores(
    model: Model,
    target: Target,
    grid: list[tuple[int | None, str | None]],
    style: str,
    settings: QuantizeSettings,
) -> list[tuple[int, dict[str, Any]]]:
    """Per (bits, scheme) of ``grid`` (None: full precision), the number of weights quantized
    and the forget and retain scores of a copy of ``model`` quantized so."""
    copy, out = load_copy(model), []
    for bits, scheme in grid:
        reset_weights(copy, model)
        names = [] if bits is None else quantize_model(copy, bits, scheme, settings.group_size)
        splits = {"forget": target.forget, "retain": target.retain}
        scored = score_plain_splits(copy, splits, style, settings)
        scores = {split: scored[split] if splits[split] else None for split in splits}
        out.append((len(names), scores))
    return out


def run(
    original: Model,
    unlearned: Model,
    target: Target,
    settings: QuantizeSettings = QuantizeSettings(),
    *,
    gold: Model | None = None,
    progress: bool = False,
) -> QuantizeResult:
    """Score forget and retain items on a copy of every model in full precision and after
    round-to-nearest quantization at each bit width and scheme."""
    if not target.forget:
        raise TargetError(f"target {target.name!r} has no forget items to score")
    models = attack_models(original, unlearned, gold, "run a quantization attack")
    style = resolve_style(original, settings.prompt_style)
    grid = [(None, None)] + [(b, s) for b in settings.bits for s in settings.schemes]
    conditions = [
        {
            "name": FULL if bits is None else f"int{bits} {scheme}",
            "bits": bits,
            "scheme": scheme,
            "scores": {},
        }
        for bits, scheme in grid
    ]
    identities = {role: model.identity() for role, model in models.items()}
    seconds: dict[str, float] = {}
    bar = progress_bar(total=len(models), desc="quantize", unit="model", enabled=progress)
    with bar:
        for role, model in models.items():
            started = time.perf_counter()
            scored = model_work(
                "quantize", model, original, target, settings,
                lambda model=model: _model_scores(model, target, grid, style, settings),
                style=style,
            )  # fmt: skip
            for condition, (n_weights, scores) in zip(conditions, scored):
                condition["n_weights"], condition["scores"][role] = n_weights, scores
            bar.update(1)
            seconds[role] = round(time.perf_counter() - started, 2)
    full = conditions[0]["scores"]
    for condition in conditions:
        scores = condition["scores"]
        condition["gap_recovery"] = gap_recovery(
            correct_column(scores["unlearned"]["forget"]),
            correct_column(full["unlearned"]["forget"]),
            correct_column(full["original"]["forget"]),
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
        )
        condition["retain_change"] = {
            role: None
            if s["retain"] is None
            else paired_difference(
                correct_column(s["retain"]),
                correct_column(full[role]["retain"]),
                n_bootstrap=settings.n_bootstrap,
                seed=settings.seed,
            )  # fmt: skip
            for role, s in scores.items()
        }
    return QuantizeResult(
        models=identities,
        target=target.name,
        settings=settings.record(prompt_style=style),
        conditions=conditions,
        seconds=seconds,
    )
