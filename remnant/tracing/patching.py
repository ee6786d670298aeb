"""Batched activation patching: many patched runs of one prompt share each forward pass.

Each batch row says which site (block output, MLP output or attention output) takes a donor's
value at which layers and positions, and which noise sample (if any) corrupts the subject's
input embeddings. A patch at position p in block L cannot change anything before p, nor
anything in blocks before L, so every row starts from its unpatched run (clean, or corrupted
with the same noise sample): its cached keys and values up to p, and its residual stream at the
input of block L (`remnant.models.resume.run_blocks`); only the tokens from p on are recomputed,
and only from block L on. Rows of one first position share a batch, each joining it at its
first block. Only canonical TransformerLens hook names are used, so any architecture the bridge
supports works; a model whose forward is more than its blocks, final norm and unembedding is
refused (`ResumeError`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from transformers.cache_utils import Cache

from remnant.models.accounting import count_resumed
from remnant.models.gradients import activation_gradients
from remnant.models.model import Model
from remnant.models.resume import block_inputs, check_resumable, run_blocks, unembed
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

    def hook(self, sample: torch.Tensor) -> Callable | None:
        """A hook adding each row's noise sample (none for -1) to a run of the whole prompt;
        None when no row is noisy."""
        if not bool((sample >= 0).any()):
            return None
        noise = self.noise[sample.clamp(min=0)] * (sample >= 0)[:, None, None]
        at = slice(self.start, self.start + self.noise.shape[1])
        return partial(_add, noise=noise, at=at)


class PreparedPrompt:
    """The unpatched runs of one prompt, in one batch: row 0 clean, row 1 + j corrupted with
    noise sample j. Keeps their next-token probabilities ``probs`` (1 + n_samples, vocab), the
    clean row's activations ``acts`` (T, d_model) at ``record`` and, when ``patchable``, their
    keys and values and the residual input of every block (``inputs``: per block, rows x T x
    d_model), from which `resume` computes patched runs."""

    def __init__(
        self,
        model: Model,
        ids: Sequence[int],
        record: Sequence[str] = (),
        corruption: Corruption | None = None,
        *,
        patchable: bool = True,
    ) -> None:
        self.model = model
        self.ids = torch.tensor(ids, dtype=torch.long, device=model.device)
        self.corruption = corruption
        self.acts: dict[str, torch.Tensor] = {}
        self._kwargs: dict[int, dict[str, Any]] = {}

        def keep(tensor: torch.Tensor, hook) -> torch.Tensor:
            self.acts[hook.name] = tensor[0].detach().clone()
            return tensor

        n = 1 if corruption is None else 1 + corruption.noise.shape[0]
        hooks = [(name, keep) for name in record]
        noise = corruption.hook(torch.arange(-1, n - 1)) if corruption is not None else None
        if noise is not None:
            hooks.append((hook_names(model, "resid")[0], noise))
        blocks = range(model.n_layers) if patchable else ()
        hooked = model.bridge.hooks(fwd_hooks=hooks)
        with torch.no_grad(), hooked, block_inputs(model, blocks) as calls:
            out = model.hf_model(
                input_ids=self.ids.expand(n, -1), use_cache=patchable, logits_to_keep=1
            )
        logits = out.logits[:, -1].float()
        self.probs = torch.softmax(logits, dim=-1)
        self.cache = out.past_key_values
        self.inputs = [calls[layer][0] for layer in sorted(calls)]
        if patchable:
            last = torch.full((n,), model.n_layers - 1)
            check_resumable(model, self.resume(torch.arange(n), 0, last, []), logits)

    def resume(
        self,
        base: torch.Tensor,
        start: int,
        blocks: torch.Tensor,
        hooks: list[tuple[str, Callable]],
    ) -> torch.Tensor:
        """Next-token logits (float32; rows, vocab) of the unpatched runs ``base[row]``, each
        computed from block ``blocks[row]`` (ascending) and position ``start`` on under
        ``hooks`` (earlier blocks and positions kept from its unpatched run): exact for patches
        at or after both. Rows join the batch at their block, so at block k the batch is the
        rows with ``blocks <= k``, in order; a hook sees those rows only."""
        base, blocks = base.to(self.model.device), blocks.to(self.model.device)
        joining = {int(k): self.inputs[int(k)][base[blocks == k], start:] for k in blocks.unique()}
        past = self._past(base, start, blocks)
        # the kept call's KV cache (under whichever keyword the model uses) becomes this copy
        kwargs = {
            key: past if isinstance(value, Cache) else value
            for key, value in self._block_kwargs(start).items()
        }
        with self.model.bridge.hooks(fwd_hooks=hooks):
            logits = unembed(self.model, run_blocks(self.model, joining, kwargs)[:, -1])
        n_layers = self.model.n_layers
        blocks_run = int((n_layers - blocks).sum())  # over the rows
        count_resumed(blocks_run * (len(self.ids) - start), 1, n_layers)
        return logits

    def _past(self, base: torch.Tensor, start: int, blocks: torch.Tensor) -> Any:
        """A copy of the keys and values of the unpatched runs ``base[row]`` before position
        ``start``, holding at block k the rows with ``blocks <= k`` (None at position 0)."""
        if start == 0:
            return None
        past = copy.deepcopy(self.cache)
        past.crop(start - len(self.ids))
        for k, layer in enumerate(past.layers):
            layer.batch_select_indices(base[blocks <= k])
        return past

    def _block_kwargs(self, start: int) -> dict[str, Any]:
        """What the model passes its blocks (attention mask, rotary embeddings, positions)
        when it runs the prompt's tokens from ``start`` on after the cached ones: kept from one
        run of the clean row."""
        if start not in self._kwargs:
            clean = torch.zeros(1, dtype=torch.long, device=self.model.device)
            past = self._past(clean, start, clean)
            with torch.no_grad(), block_inputs(self.model, [0]) as calls:
                self.model.hf_model(
                    input_ids=self.ids[None, start:],
                    past_key_values=past,
                    use_cache=start > 0,
                    logits_to_keep=1,
                )
            self._kwargs[start] = calls[0][1]
        return self._kwargs[start]


def patched_probs(
    prompt: PreparedPrompt,
    rows: Rows,
    donor: dict[str, torch.Tensor],
    answer_id: int,
    *,
    batch_size: int = 64,
    from_first_block: bool = False,
) -> torch.Tensor:
    """Probability in [0, 1] of ``answer_id`` as the next token, one value per row.

    ``donor`` maps hook names to (T, d_model) values written into the rows that patch them.
    Rows that patch nothing get their unpatched run's probability. Each row is computed from
    its first patched position and block on (`PreparedPrompt.resume`); ``from_first_block``
    computes every block (the same numbers; for benchmarks).
    """
    names = site_hooks(prompt.model)
    patched = (rows.site >= 0) & rows.positions.any(1) & rows.layers.any(1)
    first = torch.where(patched, rows.positions.int().argmax(1), -1)
    block = torch.where(patched, rows.layers.int().argmax(1), -1)
    if from_first_block:
        block = torch.where(patched, 0, -1)
    out = prompt.probs[rows.sample + 1, answer_id].cpu()
    for start in first[patched].unique().tolist():
        group = (first == start).nonzero()[:, 0]
        group = group[block[group].argsort(stable=True)]
        for chosen in group.split(batch_size):
            batch = rows[chosen]
            low = int(block[chosen[0]])
            hooks: list[tuple[str, Callable]] = []
            for k, site in enumerate(SITES):
                for layer, name in enumerate(names[site][low:], start=low):
                    at = (batch.site == k) & batch.layers[:, layer]
                    if bool(at.any()):
                        mask = (at[:, None] & batch.positions[:, start:]).to(prompt.model.device)
                        value = donor[name][start:]
                        hooks.append((name, partial(_replace, mask=mask, value=value)))
            logits = prompt.resume(batch.sample + 1, start, block[chosen], hooks)
            out[chosen] = torch.softmax(logits, dim=-1)[:, answer_id].cpu()
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
        else [(hook_names(model, "resid")[0], corruption.hook(torch.arange(n)))]
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
    # the batch may hold only the first rows (those that joined by this block)
    return torch.where(mask[: tensor.shape[0], :, None], value.to(tensor.dtype), tensor)
