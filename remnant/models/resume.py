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
of giving wrong numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
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
        blocks = model.bridge.blocks
        self.calls: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}
        kept = {start for start in starts if start < model.n_layers} | {model.n_layers - 1}
        handles = [
            blocks[start].register_forward_pre_hook(self._keeper(start), with_kwargs=True)
            for start in kept
        ]
        try:
            with torch.no_grad():
                out = model.hf_model(
                    input_ids=ids.to(model.device),
                    attention_mask=mask.to(model.device),
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(model.device),
                    use_cache=False,
                    logits_to_keep=keep,
                )
        finally:
            for handle in handles:
                handle.remove()
        self.logits = out.logits.float()
        self._check()

    def _keeper(self, start: int):
        def keep(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            # the run keeps no KV cache (use_cache=False), so the kept call holds none
            rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            self.calls[start] = (hidden.detach().clone(), rest)

        return keep

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
        bridge = self.model.bridge
        with torch.no_grad():
            for block in bridge.blocks[start:]:
                out = block(hidden, **kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
            logits = bridge.unembed(bridge.ln_final(hidden[:, -self.keep :])).float()
        count_resumed(self.tokens * copies, n_layers - start, n_layers)
        return logits

    def _check(self) -> None:
        last = self.model.n_layers - 1
        gap = float((self.resume(last) - self.logits).abs().max())
        if gap > RESUME_TOLERANCE:
            raise ResumeError(
                f"resuming {self.model.name} at its last block differs from its full forward "
                f"by {gap:.2e} in logits: its forward is more than blocks, final norm and "
                "unembedding, so it cannot be resumed"
            )


def _repeat(value: Any, rows: int, copies: int) -> Any:
    """``value`` with every tensor whose first dimension is the batch repeated ``copies``
    times along it (tuples and lists elementwise); anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    if isinstance(value, tuple | list):
        return type(value)(_repeat(v, rows, copies) for v in value)
    return value
