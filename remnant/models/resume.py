"""Resumed forwards: an intervention whose first change is in block L cannot change blocks
0..L-1, so a batch is run once unmodified, the input of block L kept, and the batch under each
such intervention computed from block L on (blocks L.., the final norm and the unembedding).

Block L's call is kept whole: its residual input and every keyword the model passed it
(attention mask, rotary position embeddings, position ids), so the resumed blocks see exactly
what a full forward gives them. Several interventions share one resumed pass: the kept batch
is repeated once per intervention, rows grouped by intervention (for
`remnant.concept_vectors.interventions.grouped_hooks`). The blocks, final norm and
unembedding are the bridge's components, so bridge hooks fire as in a full forward. Each batch
checks once that resuming its last block reproduces the full forward's logits; a model whose
forward does more than blocks, norm and unembedding fails that check (`ResumeError`) instead
of giving wrong numbers. `block_inputs`, `run_blocks` and `check_resumable` are the pieces,
shared with activation patching (`remnant.tracing.patching`), which also resumes at a position.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from transformers.cache_utils import Cache

from remnant.errors import ResumeError
from remnant.models.accounting import count_resumed
from remnant.models.model import Model
from remnant.scoring.batching import real_positions

#: Largest |logit difference| between resuming the last block and the full forward.
RESUME_TOLERANCE = 1e-4


class ResumedBatch:
    """One left-padded batch run unmodified, keeping the call of each block in ``starts``;
    ``logits`` are its logits (float32) at the last ``keep`` positions.

    With ``prefix`` (the keys and values of the first columns of ``ids``, common to every row:
    `remnant.scoring.batching.SharedPrefix`, whose layout ``ids`` and ``mask`` then have), only
    the columns after it are run per row; a resumed pass runs the prefix once per copy (an
    intervention changes it too, the same way in every row) and every row after it."""

    def __init__(
        self,
        model: Model,
        ids: torch.Tensor,
        mask: torch.Tensor,
        starts: Iterable[int],
        keep: int,
        prefix: Cache | None = None,
    ) -> None:
        self.model, self.keep, self.prefix = model, keep, prefix
        self.rows = ids.shape[0]
        self.shared = 0 if prefix is None else prefix.get_seq_length()
        self.tokens = int(mask[:, self.shared :].sum())
        kept = {start for start in starts if start < model.n_layers} | {model.n_layers - 1}
        ids, mask = ids.to(model.device), mask.to(model.device)
        self.prefix_calls: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}
        past = None
        with torch.no_grad():
            if prefix is not None:
                with block_inputs(model, kept) as self.prefix_calls:
                    model.hf_model(input_ids=ids[:1, : self.shared], use_cache=True)
                past = copy.deepcopy(prefix)
                past.batch_repeat_interleave(self.rows)
            with block_inputs(model, kept) as self.calls:
                out = model.hf_model(
                    input_ids=ids[:, self.shared :],
                    attention_mask=mask,
                    position_ids=real_positions(mask)[:, self.shared :],
                    past_key_values=past,
                    use_cache=past is not None,
                    logits_to_keep=keep,
                )
        self.logits = out.logits.float()
        check_resumable(model, self.resume(model.n_layers - 1), self.logits)

    def resume(self, start: int, copies: int = 1) -> torch.Tensor:
        """Logits (float32; copies x rows, keep, vocab) of the batch repeated ``copies`` times
        (rows of copy g at [g*rows, (g+1)*rows)), computed from block ``start`` on, under the
        hooks attached now; ``start`` = n_layers: the unmodified logits, repeated."""
        n_layers = self.model.n_layers
        if start >= n_layers:
            return self.logits.repeat(copies, 1, 1)
        past = self._prefix_past(start, copies)
        hidden, kwargs = self.calls[start]
        kwargs = {
            k: past if isinstance(v, Cache) else _repeat(v, self.rows, copies)
            for k, v in kwargs.items()
        }
        hidden = run_blocks(self.model, {start: hidden.repeat(copies, 1, 1)}, kwargs)
        count_resumed((self.tokens + self.shared) * copies, n_layers - start, n_layers)
        return unembed(self.model, hidden[:, -self.keep :])

    def _prefix_past(self, start: int, copies: int) -> Cache | None:
        """Keys and values of the shared prefix for every row of ``copies`` copies, blocks
        ``start``.. computed under the hooks attached now, once per copy (None: no prefix)."""
        if self.prefix is None:
            return None
        past = copy.deepcopy(self.prefix)
        past.batch_repeat_interleave(copies)
        for layer in past.layers[start:]:
            layer.reset()  # refilled below by the copies' own prefix runs
        hidden, kwargs = self.prefix_calls[start]
        kwargs = {k: past if isinstance(v, Cache) else v for k, v in kwargs.items()}
        run_blocks(self.model, {start: hidden.repeat(copies, 1, 1)}, kwargs)
        past.batch_repeat_interleave(self.rows)
        return past


@contextlib.contextmanager
def block_inputs(
    model: Model, blocks: Iterable[int]
) -> Iterator[dict[int, tuple[torch.Tensor, dict[str, Any]]]]:
    """While open, each forward keeps the call of every block in ``blocks``: its residual input
    (detached) and every other keyword the model passed it (its KV cache included, when the
    forward has one), by block index in the dict yielded."""
    calls: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}

    def keeper(index: int):
        def keep(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            calls[index] = (hidden.detach().clone(), rest)

        return keep

    handles = [
        model.bridge.blocks[i].register_forward_pre_hook(keeper(i), with_kwargs=True)
        for i in set(blocks)
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def run_blocks(
    model: Model, joining: dict[int, torch.Tensor], kwargs: dict[str, Any]
) -> torch.Tensor:
    """The residual stream after the last block of running rows through the blocks from the
    first key of ``joining`` on (each called with ``kwargs``), under the hooks attached now.
    ``joining[k]`` are the rows whose residual input at block k is given; they are appended to
    the batch there, so the output holds the rows in order of the block they joined at."""
    hidden = None
    with torch.no_grad():
        for index in range(min(joining), model.n_layers):
            if index in joining:
                rows = joining[index]
                hidden = rows if hidden is None else torch.cat([hidden, rows])
            out = model.bridge.blocks[index](hidden, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def unembed(model: Model, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (float32) of a residual stream after the last block: final norm, unembedding."""
    with torch.no_grad():
        return model.bridge.unembed(model.bridge.ln_final(hidden)).float()


def check_resumable(model: Model, resumed: torch.Tensor, full: torch.Tensor) -> None:
    """Raise `ResumeError` unless ``resumed`` (logits from resuming the last block) equal the
    full forward's ``full`` within `RESUME_TOLERANCE`."""
    gap = float((resumed - full).abs().max())
    if gap > RESUME_TOLERANCE:
        raise ResumeError(
            f"resuming {model.name} at its last block differs from its full forward by "
            f"{gap:.2e} in logits: its forward is more than blocks, final norm and unembedding, "
            "so it cannot be resumed"
        )


def _repeat(value: Any, rows: int, copies: int) -> Any:
    """``value`` with every tensor whose first dimension is the batch repeated ``copies``
    times along it (tuples and lists elementwise); anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    if isinstance(value, tuple | list):
        return type(value)(_repeat(v, rows, copies) for v in value)
    return value
