"""Write a model as an ordinary Hugging Face folder (safetensors, config, tokenizer), atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from remnant.io import atomic_directory, check_output_free


def save_checkpoint(
    state_dict: dict[str, torch.Tensor],
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    extra_files: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save weights (tied output embedding dropped), config and tokenizer into ``out_dir``.

    ``extra_files`` maps file names to JSON-serialisable values written beside the weights.
    The folder appears only once complete; an existing one is refused unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    check_output_free(out_dir, overwrite)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    tensors = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in state_dict.items()
        if not (tied and name == "lm_head.weight")
    }
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        _drop_quantization(tmp / "config.json")
        tokenizer.save_pretrained(tmp)
        for name, value in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _drop_quantization(config_path: Path) -> None:
    """A dequantised GGUF model keeps a ``quantization_config`` that would refuse to reload."""
    config = json.loads(config_path.read_text("utf-8"))
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
