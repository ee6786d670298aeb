"""Batched activation patching: many patched runs of one prompt share each forward pass.

Each batch row says which site (block output, MLP output or attention output) takes a donor's
value at which layers and positions, and which noise sample (if any) corrupts the subject's
input embeddings. A patch at position p cannot change anything before p, so every row starts
from the cached keys and values of its unpatched run (clean, or corrupted with the same noise
sample) up to its first patched position and recomputes only the tokens from there on. Only
canonical TransformerLens hook names are used, so any architecture the bridge supports works.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from remnant.models.gradients import activation_gradients
from remnant.models.model import Model
from remnant.probes.activations import Site, hook_names

SITES: tuple[Site, ...] = ("resid", "mlp", "attn")
SITE_LABELS = {"resid": "block output", "mlp": "MLP output", "attn": "attention output"}


def site_hooks(model: Model) -> dict[Site, list[str]]:
    """Per site, the hook name of every layer: ``resid`` is ``blocks.{i}.hook_out``."""
    return {
        "resid": hook_names(model, "resid")[1:],
        "mlp": hook_names(model, "mlp"),
        "attn": hook_names(model, "attn"),
    }


def all_site_hooks(model: Model) -> list[str]:
    """Every site's hook name at every layer."""
    return [name for names in site_hooks(model).values() for name in names]


@dataclasses.dataclass(frozen=True)
class Rows:
    """Row descriptors of a batched patched run of a prompt of ``T`` tokens.

    ``site`` (R,) indexes ``SITES`` (-1: nothing patched); ``layers`` (R, n_layers) and
    ``positions`` (R, T) say where the donor value replaces the row's own; ``sample`` (R,)
    picks the noise sample added to the corrupted span (-1: no noise).
    """

    site: torch.Tensor
    layers: torch.Tensor
    positions: torch.Tensor
    sample: torch.Tensor

    def __len__(self) -> int:
        return int(self.site.shape[0])

    def __getitem__(self, index: slice | torch.Tensor) -> Rows:
        return Rows(self.site[index], self.layers[index], self.positions[index], self.sample[index])


@dataclasses.dataclass(frozen=True)
class Corruption:
    """Noise added to the input embeddings (``embed.hook_out``) at positions [start, start + k):
    ``noise`` is (n_samples, k, d_model)."""

    noise: torch.Tensor
    start: int

    def hook(self, sample: torch.Tensor, offset: int) -> Callable | None:
        """A hook adding each row's noise sample (none for -1) to a run of the tokens from
        ``offset`` on; None when no noisy position is among them or no row is noisy."""
        first = max(self.start, offset)
        stop = self.start + self.noise.shape[1]
        if first >= stop or not bool((sample >= 0).any()):
            return None
        noise = self.noise[sample.clamp(min=0), first - self.start :]
        noise = noise * (sample >= 0)[:, None, None]
        return partial(_add, noise=noise, at=slice(first - offset, stop - offset))


class PreparedPrompt:
    """The unpatched runs of one prompt, in one batch: row 0 clean, row 1 + j corrupted with
    noise sample j. Keeps their keys and values, their next-token probabilities ``probs``
    (1 + n_samples, vocab) and the clean row's activations ``acts`` (T, d_model) at ``record``."""

    def __init__(
        self,
        model: Model,
        ids: Sequence[int],
        record: Sequence[str] = (),
        corruption: Corruption | None = None,
    ) -> None:
        self.model = model
        self.ids = torch.tensor(ids, dtype=torch.long, device=model.device)
        self.corruption = corruption
        self.acts: dict[str, torch.Tensor] = {}

        def keep(tensor: torch.Tensor, hook) -> torch.Tensor:
            self.acts[hook.name] = tensor[0].detach().clone()
            return tensor

        n = 1 if corruption is None else 1 + corruption.noise.shape[0]
        hooks = [(name, keep) for name in record]
        noise = corruption.hook(torch.arange(-1, n - 1), 0) if corruption is not None else None
        if noise is not None:
            hooks.append((hook_names(model, "resid")[0], noise))
        self.probs, self.cache = self.run(torch.arange(n), 0, hooks, keep_cache=True)

    def run(
        self,
        base: torch.Tensor,
        start: int,
        hooks: list[tuple[str, Callable]],
        keep_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Next-token probabilities (rows, vocab) from running the tokens from ``start`` on,
        each row continuing its unpatched run ``base[row]`` before ``start``; and the cache
        when ``keep_cache``."""
        past = None
        if start > 0:
            past = copy.deepcopy(self.cache)
            past.crop(start - len(self.ids))
            past.batch_select_indices(base.to(self.model.device))
        with torch.no_grad(), self.model.bridge.hooks(fwd_hooks=hooks):
            out = self.model.hf_model(
                input_ids=self.ids[start:].expand(len(base), -1),
                past_key_values=past,
                use_cache=keep_cache,
                logits_to_keep=1,
            )
        return torch.softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values


def patched_probs(
    prompt: PreparedPrompt,
    rows: Rows,
    donor: dict[str, torch.Tensor],
    answer_id: int,
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """Probability in [0, 1] of ``answer_id`` as the next token, one value per row.

    ``donor`` maps hook names to (T, d_model) values written into the rows that patch them.
    Rows that patch nothing get their unpatched run's probability.
    """
    names = site_hooks(prompt.model)
    embed = hook_names(prompt.model, "resid")[0]
    patched = (rows.site >= 0) & rows.positions.any(1)
    first = torch.where(patched, rows.positions.int().argmax(1), -1)
    out = prompt.probs[rows.sample + 1, answer_id].cpu()
    for start in first.unique().tolist():
        if start < 0:
            continue
        for chosen in (first == start).nonzero()[:, 0].split(batch_size):
            batch = rows[chosen]
            hooks: list[tuple[str, Callable]] = []
            noise = prompt.corruption.hook(batch.sample, start) if prompt.corruption else None
            if noise is not None:
                hooks.append((embed, noise))
            for k, site in enumerate(SITES):
                for layer, name in enumerate(names[site]):
                    at = (batch.site == k) & batch.layers[:, layer]
                    if bool(at.any()):
                        mask = (at[:, None] & batch.positions[:, start:]).to(prompt.model.device)
                        value = donor[name][start:]
                        hooks.append((name, partial(_replace, mask=mask, value=value)))
            probs, _ = prompt.run(batch.sample + 1, start, hooks)
            out[chosen] = probs[:, answer_id].cpu()
    return out


def attribution_effects(
    prompt: PreparedPrompt, donor: dict[str, torch.Tensor], answer_id: int
) -> torch.Tensor:
    """Estimated effect on the answer probability of writing the ``donor`` value of each site
    at each (token, layer) into the prompt's runs (its corrupted rows, mean over the noise
    samples, when it has a corruption; else its one run), (len(SITES), T, n_layers):
    (donor - own activation) . d p(answer) / d activation, from one forward and one backward
    pass (attribution patching). A patch over several layers or tokens is estimated by the
    sum of theirs."""
    model, corruption = prompt.model, prompt.corruption
    n = 1 if corruption is None else corruption.noise.shape[0]
    hooks = (
        []
        if corruption is None
        else [(hook_names(model, "resid")[0], corruption.hook(torch.arange(n), 0))]
    )

    def answer_prob() -> torch.Tensor:
        out = model.hf_model(input_ids=prompt.ids.expand(n, -1), use_cache=False, logits_to_keep=1)
        return torch.softmax(out.logits[:, -1].float(), dim=-1)[:, answer_id].sum()

    grads = activation_gradients(model, all_site_hooks(model), answer_prob, hooks=hooks)
    effects = torch.zeros(len(SITES), len(prompt.ids), model.n_layers)
    for k, site in enumerate(SITES):
        for layer, name in enumerate(site_hooks(model)[site]):
            act, grad = grads[name]
            delta = donor[name].to(act.dtype) - act
            effects[k, :, layer] = (delta * grad).sum(-1).mean(0).float().cpu()
    if corruption is not None:
        effects[:, : corruption.start] = 0.0  # positions before the noise are clean in every run
    return effects


def _add(tensor: torch.Tensor, hook, noise: torch.Tensor, at: slice) -> torch.Tensor:
    out = tensor.clone()
    out[:, at] += noise.to(tensor.device, tensor.dtype)
    return out


def _replace(tensor: torch.Tensor, hook, mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[..., None], value.to(tensor.dtype), tensor)
