"""`Model`: one model under audit, hooked through TransformerLens, with its identity."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from remnant.models.checkpoint import save_checkpoint

#: A Hugging Face parameter name inside a decoder layer; group 1 is the layer's index
#: (``model.layers.3.mlp.down_proj.weight`` → 3; GPT-2's ``h.3.`` and ``blocks.3.`` alike).
LAYER_NAME = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


@dataclasses.dataclass(eq=False)
class Model:
    """A model under audit.

    ``bridge`` wraps the Hugging Face model *in place*, so hooks added through the bridge also
    act on ``hf_model`` calls (forward and ``generate``). ``parameters`` maps the original
    Hugging Face names to the live weight tensors (captured before the bridge renamed modules).
    ``toolchain`` is the self-check the model passed when loaded: its largest logit differences
    and the installed versions. ``decoder`` is a plain twin of ``hf_model`` holding the same
    weight tensors, for decoding where no hook acts (`remnant.models.decoder`; None: none could
    be built).
    """

    bridge: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str
    parameters: dict[str, torch.Tensor]
    toolchain: dict[str, Any] = dataclasses.field(default_factory=dict)
    decoder: PreTrainedModel | None = dataclasses.field(default=None, repr=False)

    @property
    def hf_model(self) -> PreTrainedModel:
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def d_mlp(self) -> int:
        return int(self.bridge.cfg.d_mlp)

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters.values())).device

    _hashed: tuple[str, tuple[int, ...]] | None = dataclasses.field(
        default=None, init=False, repr=False
    )

    @property
    def content_hash(self) -> str:
        """sha256 over parameter names and bytes (tied weights counted once), first 16 hex
        digits; hashed again when a weight has changed in place since (torch's version
        counters), so it always names the weights as they are."""
        if self._hashed is None or self._hashed[1] != self._versions():
            self.hash_weights()
        assert self._hashed is not None
        return self._hashed[0]

    def hash_weights(self) -> str:
        """Hash the weights now (`content_hash`), whatever was hashed before."""
        digest = hashlib.sha256()
        seen: set[int] = set()
        for name in sorted(self.parameters):
            tensor = self.parameters[name].detach()
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.cpu().contiguous().view(torch.uint8).numpy().tobytes())
        self._hashed = (digest.hexdigest()[:16], self._versions())
        return self._hashed[0]

    def weights_changed(self) -> None:
        """Call after changing weights in a way torch's version counters do not record
        (through ``tensor.data``, as PEFT's LoRA merge does): the content hash is computed
        afresh when next needed."""
        self._hashed = None

    def same_weights_as(self, source: Model) -> None:
        """Record that this model's weights were just made equal to ``source``'s (copied in
        place): they take its content hash without hashing them again."""
        self._hashed = (source.content_hash, self._versions())

    def cache_hash(self) -> str | None:
        """The content hash when outputs may be kept under it, else None: None while the
        weights differ from what was last hashed (a model being trained or edited: hashing it
        at every evaluation would cost more than keeping its outputs saves) and when the forward
        pass uses a parameter that is not one of the weights (an adapter being trained)."""
        if self._hashed is None:
            self.hash_weights()
        elif self._hashed[1] != self._versions():
            return None
        if not self._only_own_weights():
            return None
        assert self._hashed is not None
        return self._hashed[0]

    def hooked(self) -> bool:
        """Whether any of the bridge's hook points has a hook attached."""
        points = self.bridge.hook_dict.values()
        return any(point._forward_hooks or point._backward_hooks for point in points)

    def plain_decoder(self) -> PreTrainedModel:
        """What to decode with: the plain twin (``decoder``) while no bridge hook is attached and
        the forward uses only the weights in ``parameters`` (which the twin holds), else
        ``hf_model`` (through the bridge, so its hooks and adapters act)."""
        if self.decoder is None or self.hooked() or not self._only_own_weights():
            return self.hf_model
        return self.decoder

    def _only_own_weights(self) -> bool:
        own = {id(tensor) for tensor in self.parameters.values()}
        return all(id(p) in own for p in self.hf_model.parameters())

    def _versions(self) -> tuple[int, ...]:
        return tuple(tensor._version for tensor in self.parameters.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under their Hugging Face names (detached views of the live tensors)."""
        return {name: tensor.detach() for name, tensor in self.parameters.items()}

    def identity(self) -> dict[str, Any]:
        """What results record about the model: name, source, content hash and shape."""
        return {
            "name": self.name,
            "source": self.source,
            "content_hash": self.content_hash,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
        }

    def save(
        self,
        out_dir: str | Path,
        *,
        extra_files: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the current weights as an ordinary Hugging Face folder."""
        return save_checkpoint(
            self.state_dict(),
            self.hf_model.config,
            self.tokenizer,
            out_dir,
            extra_files=extra_files,
            overwrite=overwrite,
        )
