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
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from remnant.errors import ResumeError
from remnant.models.accounting import count_resumed
from remnant.models.model import Model

#: Largest |logit difference| between resuming the last block and the full forward.
RESUME_TOLERANCE = 1e-4


class ResumedBatch:
    """One left-padded batch run unmodified, keeping the call of each block in ``starts``;
    ``logits`` are its logits (float32) at the last ``keep`` positions."""

    def __init__(
        self,
        model: Model,
        ids: torch.Tensor,
        mask: torch.Tensor,
        starts: Iterable[int],
        keep: int,
    ) -> None:
        self.model, self.keep = model, keep
        self.rows = ids.shape[0]
        self.tokens = int(mask.sum())
        kept = {start for start in starts if start < model.n_layers} | {model.n_layers - 1}
        with torch.no_grad(), block_inputs(model, kept) as self.calls:
            out = model.hf_model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(model.device),
                use_cache=False,
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
        hidden, kwargs = self.calls[start]
        hidden = hidden.repeat(copies, 1, 1)
        kwargs = {k: _repeat(v, self.rows, copies) for k, v in kwargs.items()}
        logits = run_blocks(self.model, {start: hidden}, kwargs, self.keep)
        count_resumed(self.tokens * copies, n_layers - start, n_layers)
        return logits


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
    model: Model, joining: dict[int, torch.Tensor], kwargs: dict[str, Any], keep: int
) -> torch.Tensor:
    """Logits (float32; rows, keep, vocab) at the last ``keep`` positions of running rows
    through the blocks from the first key of ``joining`` on (each called with ``kwargs``), the
    final norm and the unembedding, under the hooks attached now. ``joining[k]`` are the rows
    whose residual input at block k is given; they are appended to the batch there, so the
    output holds the rows in order of the block they joined at."""
    bridge = model.bridge
    hidden = None
    with torch.no_grad():
        for index in range(min(joining), model.n_layers):
            if index in joining:
                rows = joining[index]
                hidden = rows if hidden is None else torch.cat([hidden, rows])
            out = bridge.blocks[index](hidden, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        return bridge.unembed(bridge.ln_final(hidden[:, -keep:])).float()


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
