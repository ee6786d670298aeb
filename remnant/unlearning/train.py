"""The training loop shared by GA, GradDiff, NPO and RMU, and each method's objective.

The frozen original model that NPO and RMU compare against is the trainable model itself before
its first update: its outputs on the (fixed) training examples are computed once up front, which
equals running a frozen copy beside the trained one at every step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from remnant.errors import UnlearningError
from remnant.models.model import LAYER_NAME, Model
from remnant.progress import progress_bar
from remnant.scoring.statistics import rounded
from remnant.unlearning import losses
from remnant.unlearning.config import (
    GAConfig,
    GradDiffConfig,
    NPOConfig,
    RMUConfig,
    TrainingConfig,
)
from remnant.unlearning.data import Batch, Example, batches, in_order

log = logging.getLogger(__name__)

#: (forget batch, retain batch or None) → (loss to minimise, forget term, retain term or None)
Objective = Callable[[Batch, Batch | None], tuple[torch.Tensor, float, float | None]]


def select_parameters(
    model: Model, layers: Sequence[int] | None, modules: Sequence[str]
) -> dict[str, nn.Parameter]:
    """The parameters (Hugging Face names, tied weights once) in ``layers`` whose names contain
    one of ``modules``; ``layers=None`` means every layer and everything outside the layers."""
    if layers is not None and max(layers) >= model.n_layers:
        raise UnlearningError(
            f"{model.name} has layers 0..{model.n_layers - 1}; cannot train layers {list(layers)}"
        )
    chosen: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, tensor in model.parameters.items():
        if not isinstance(tensor, nn.Parameter) or id(tensor) in seen:
            continue
        match = LAYER_NAME.search(name)
        if layers is not None and (match is None or int(match.group(1)) not in layers):
            continue
        if modules and not any(fragment in name for fragment in modules):
            continue
        seen.add(id(tensor))
        chosen[name] = tensor
    if not chosen:
        raise UnlearningError(
            f"no parameter of {model.name} matches layers {layers} and modules {list(modules)}"
        )
    return chosen


@contextlib.contextmanager
def trainable(
    model: Model, config: TrainingConfig, layers: Sequence[int] | None
) -> Iterator[list[nn.Parameter]]:
    """Make only the selected parameters (or LoRA adapters on them) require gradients.

    On a normal exit LoRA adapters are merged into the weights; either way the module tree and
    the ``requires_grad`` flags are restored, so the Model keeps its hooks and names.
    """
    selected = select_parameters(model, layers, config.modules)
    flags = {p: p.requires_grad for p in model.hf_model.parameters()}
    for p in flags:
        p.requires_grad_(False)
    try:
        if config.lora_rank:
            with _lora(model.hf_model, list(selected.values()), config) as adapters:
                yield adapters
        else:
            for p in selected.values():
                p.requires_grad_(True)
            yield list(selected.values())
    finally:
        for p, flag in flags.items():
            p.grad = None
            p.requires_grad_(flag)


def fine_tune(
    model: Model,
    examples: Sequence[Example],
    config: TrainingConfig,
    *,
    after_step: Callable[[int], None] | None = None,
    desc: str = "fine-tuning",
    progress: bool = False,
) -> list[float]:
    """``config.max_steps`` AdamW steps (no weight decay) of the language-model loss on
    ``examples`` (batches drawn with ``config.seed``) on ``model`` in place, training what
    ``config.layers`` and ``config.modules`` select, through LoRA adapters merged in at the end
    unless ``config.lora_rank`` is 0; no stop rule. Calls ``after_step(step)`` after each step.
    Returns the loss per step (mean negative log-likelihood per scored token)."""
    steps = config.max_steps(len(examples))
    torch.manual_seed(config.seed)  # LoRA initialisation
    generator = torch.Generator().manual_seed(config.seed)
    stream = batches(
        examples, config.batch_size, model.tokenizer.pad_token_id, model.device, generator
    )
    curve: list[float] = []
    bar = progress_bar(total=steps, desc=desc, unit="step", enabled=progress)
    with bar, trainable(model, config, config.layers) as params:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        for step in range(1, steps + 1):
            batch = next(stream)
            loss = losses.nll(losses.token_logprobs(model, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            curve.append(rounded(loss.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if after_step is not None:
                after_step(step)
    model.weights_changed()
    return curve


@contextlib.contextmanager
def _lora(
    model: nn.Module, weights: list[nn.Parameter], config: TrainingConfig
) -> Iterator[list[nn.Parameter]]:
    """PEFT LoRA adapters on the linear layers owning ``weights``, merged into them on success."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    wanted = {id(w) for w in weights}
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and id(module.weight) in wanted
    ]
    if not names:
        raise UnlearningError("LoRA needs linear weights among the trained parameters")
    tree = {module: dict(module._modules) for module in model.modules()}
    attributes = set(vars(model))
    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=names
    )
    inject_adapter_in_model(lora, model)
    adapters = [p for name, p in model.named_parameters() if "lora_" in name]
    for p in adapters:
        p.requires_grad_(True)
    try:
        yield adapters
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.merge()  # adds scale · B A into the base weight tensor, in place
    finally:
        for module, children in tree.items():
            module._modules.clear()
            module._modules.update(children)
        for name in set(vars(model)) - attributes:  # PEFT's bookkeeping (``peft_config``)
            delattr(model, name)


def make_objective(
    model: Model,
    config: TrainingConfig,
    forget: Sequence[Example],
    retain: Sequence[Example],
    generator: torch.Generator,
) -> tuple[Objective, bool]:
    """The method's loss for a forget batch and a retain batch, and whether it uses retain data.

    Must be called before any update: NPO and RMU record the original model's outputs here.
    """
    if isinstance(config, GAConfig):
        return lambda f, r: _ga(model, f), False
    if isinstance(config, GradDiffConfig):

        def graddiff(f: Batch, r: Batch | None) -> tuple[torch.Tensor, float, float | None]:
            loss, forget_nll, _ = _ga(model, f)
            return _with_retain_nll(model, loss, forget_nll, r, config.retain_weight)

        return graddiff, True
    if isinstance(config, NPOConfig):
        with torch.no_grad():
            reference = torch.cat(
                [losses.token_logprobs(model, b).sum(-1) for b in _in_order(forget, config, model)]
            )
        uses_retain = config.retain_weight > 0

        def npo(f: Batch, r: Batch | None) -> tuple[torch.Tensor, float, float | None]:
            logratio = losses.token_logprobs(model, f).sum(-1) - reference[f.index]
            loss = losses.npo_loss(logratio, config.beta)
            if not uses_retain:
                return loss, loss.item(), None
            return _with_retain_nll(model, loss, loss.item(), r, config.retain_weight)

        return npo, uses_retain
    if isinstance(config, RMUConfig):
        return _rmu(model, config, retain, generator), True
    raise UnlearningError(f"no objective for {type(config).__name__}")


def _ga(model: Model, forget: Batch) -> tuple[torch.Tensor, float, None]:
    forget_nll = losses.nll(losses.token_logprobs(model, forget), forget)
    return -forget_nll, forget_nll.item(), None


def _with_retain_nll(
    model: Model, loss: torch.Tensor, forget_term: float, retain: Batch | None, weight: float
) -> tuple[torch.Tensor, float, float]:
    assert retain is not None
    retain_nll = losses.nll(losses.token_logprobs(model, retain), retain)
    return loss + weight * retain_nll, forget_term, retain_nll.item()


def _rmu(
    model: Model, config: RMUConfig, retain: Sequence[Example], generator: torch.Generator
) -> Objective:
    if config.layer >= model.n_layers - 1:
        raise UnlearningError(
            f"the RMU layer must lie below the last layer of {model.name} (0..{model.n_layers - 2})"
        )
    control = config.steering_coeff * losses.random_unit_vector(model.d_model, generator)
    control = control.to(model.device)
    with torch.no_grad():
        frozen = [
            h[m.bool()]
            for b in _in_order(retain, config, model)
            for h, m in zip(losses.residual(model, b, config.layer), b.mask)
        ]

    def rmu(f: Batch, r: Batch | None) -> tuple[torch.Tensor, float, float]:
        assert r is not None
        forget_mse = losses.masked_mse(losses.residual(model, f, config.layer), control, f.own)
        reference = torch.zeros(*r.ids.shape, model.d_model, device=model.device)
        for row, i in enumerate(r.index):
            reference[row, : len(frozen[i])] = frozen[i]
        retain_mse = losses.masked_mse(losses.residual(model, r, config.layer), reference, r.mask)
        return forget_mse + config.alpha * retain_mse, forget_mse.item(), retain_mse.item()

    return rmu


def _in_order(examples: Sequence[Example], config: TrainingConfig, model: Model) -> Iterator[Batch]:
    return in_order(examples, config.batch_size, model.tokenizer.pad_token_id, model.device)


def train(
    model: Model,
    config: TrainingConfig,
    forget: Sequence[Example],
    retain: Sequence[Example],
    *,
    forget_accuracy: Callable[[], float] | None = None,
    accuracy_before: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run up to ``config.max_steps(len(forget))`` AdamW steps of the method's objective on
    ``model`` in place, ending early by the stop rule.

    ``forget_accuracy`` scores the current weights (greedy accuracy on the forget QA items,
    0..1) and ``accuracy_before`` is its value before training; with both and a
    ``config.stop_fraction``, the score is checked after every ``config.steps_per_epoch`` steps
    and after the last, and training stops at the first check at most ``stop_fraction`` ×
    ``accuracy_before``. Returns what happened: wall and CPU seconds (``check_seconds`` of them
    spent on checks), the step budget and the steps and epochs taken, the stop rule's checks,
    trained parameter count and layers, and the forget and retain terms of the loss at every step.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    objective, uses_retain = make_objective(model, config, forget, retain, generator)
    if uses_retain and not retain:
        raise UnlearningError(
            "this method needs retain data, but no retain items are left to train on (the target "
            "has no retain items or unrelated passages, or its only retain item is held out)"
        )
    layers = config.trained_layers if isinstance(config, RMUConfig) else config.layers
    pad_id, device = model.tokenizer.pad_token_id, model.device
    forget_batches = batches(forget, config.batch_size, pad_id, device, generator)
    retain_batches = (
        batches(retain, config.batch_size, pad_id, device, generator) if uses_retain else None
    )
    max_steps, per_epoch = config.max_steps(len(forget)), config.steps_per_epoch(len(forget))
    rule, threshold = None, 0.0
    if config.stop_fraction is not None and forget_accuracy is not None:
        if accuracy_before is None:
            raise ValueError("the stop rule needs the forget accuracy before training")
        threshold = config.stop_fraction * accuracy_before
        rule = {
            "stop_fraction": config.stop_fraction,
            "forget_accuracy_before": accuracy_before,
            "threshold": round(threshold, 6),
            "check_every_steps": per_epoch,
            "checks": [],
            "fired": False,
            "fired_at_step": None,
        }
    check_seconds = 0.0
    forget_curve: list[float] = []
    retain_curve: list[float | None] = []
    with trainable(model, config, layers) as params:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        n_trained = sum(p.numel() for p in params)
        bar = progress_bar(total=max_steps, desc="unlearning", unit="step", enabled=progress)
        for step in range(1, max_steps + 1):
            retain_batch = next(retain_batches) if retain_batches is not None else None
            loss, forget_term, retain_term = objective(next(forget_batches), retain_batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            forget_curve.append(round(forget_term, 6))
            retain_curve.append(None if retain_term is None else round(retain_term, 6))
            log.debug("step %d forget %.4f retain %s", step, forget_term, retain_term)
            bar.update(1)
            bar.set_postfix(forget=f"{forget_term:.3f}", retain=_fmt(retain_term))
            if rule is not None and (step % per_epoch == 0 or step == max_steps):
                check_started = time.perf_counter()
                accuracy = forget_accuracy()  # type: ignore[misc]
                check_seconds += time.perf_counter() - check_started
                rule["checks"].append({"step": step, "forget_accuracy": accuracy})
                log.info("step %d: forget accuracy %.3f", step, accuracy)
                if accuracy <= threshold + 1e-9:  # an accuracy equal to the threshold stops
                    rule |= {"fired": True, "fired_at_step": step}
                    break
        bar.close()
    model.weights_changed()
    steps = len(forget_curve)
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu_started, 2),
        "check_seconds": round(check_seconds, 2),
        "max_steps": max_steps,
        "steps": steps,
        "epochs": round(steps * config.batch_size / len(forget), 2),
        "stop_rule": rule,
        "trained_parameters": n_trained,
        "trained_layers": list(layers) if layers is not None else "all",
        "n_forget_examples": len(forget),
        "n_retain_examples": len(retain) if uses_retain else 0,
        "forget_term": forget_curve,
        "retain_term": retain_curve,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
