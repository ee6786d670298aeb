"""Token accounting: how many tokens this process has pushed through the models it loaded.

Every model `remnant.models.load_model` loads counts its forward passes (a hook on the Hugging
Face model, which every forward takes: plain calls, ``generate``'s steps and the bridge's
hooked runs): the new tokens of each row, without padding (a cached decoding step counts its one
new token, not the prefix it attends to). A forward resumed at block L runs only blocks L.. and
counts as that fraction of its tokens (`count_resumed`). A forward run with gradients enabled
is counted as backward tokens as well: a backward pass follows it (fine-tuning, soft prompts,
attribution).
A stage's cost floor is then its tokens over the rate of a plain batched forward measured on
the same machine (`bench/audit_budget.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass
class TokenCount:
    """Tokens pushed forward, and of those, tokens pushed with gradients (then backward)."""

    forward: int = 0
    backward: int = 0

    def since(self, earlier: TokenCount) -> dict[str, int]:
        """The tokens counted after ``earlier`` (a copy taken with `snapshot`)."""
        return {
            "forward": self.forward - earlier.forward,
            "backward": self.backward - earlier.backward,
        }

    def snapshot(self) -> TokenCount:
        return dataclasses.replace(self)


#: The process-wide count.
TOKENS = TokenCount()


def count_tokens(hf_model: torch.nn.Module) -> None:
    """Count every forward of ``hf_model`` in `TOKENS`."""
    hf_model.register_forward_pre_hook(_count, with_kwargs=True)


def count_resumed(tokens: int, blocks_run: int, n_layers: int) -> None:
    """Count a forward resumed at a block (`remnant.models.resume`): ``tokens`` pushed through
    ``blocks_run`` of the ``n_layers`` blocks, as that fraction of tokens."""
    TOKENS.forward += round(tokens * blocks_run / n_layers)


def _count(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        # the mask spans the cached prefix too; the new tokens are its last columns
        new = int(mask[:, -shape[1] :].sum())
    else:
        new = shape[0] * shape[1]
    TOKENS.forward += new
    if torch.is_grad_enabled():
        TOKENS.backward += new
