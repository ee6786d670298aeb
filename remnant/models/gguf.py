"""Dequantise a GGUF file once into a cached Hugging Face folder, named by the file's sha256,
the conversion code and the library versions (recorded in ``remnant-source.json``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from remnant.errors import ModelLoadError
from remnant.models.cache import build_once, cache_key, file_sha256, models_dir, source_digest
from remnant.models.checkpoint import save_checkpoint
from remnant.models.toolchain import installed_versions

log = logging.getLogger(__name__)

SOURCE_FILE = "remnant-source.json"
_LIBRARIES = ("torch", "transformers", "gguf", "safetensors")


def conversion_provenance(sha256: str) -> dict[str, object]:
    """What shapes a converted folder: the GGUF's sha256, the conversion code, the versions."""
    modules = [sys.modules[__name__], sys.modules[save_checkpoint.__module__]]
    return {
        "gguf_sha256": sha256,
        "code": source_digest(*modules),
        "versions": installed_versions(_LIBRARIES),
    }


def conversion_dir(prefix: str, sha256: str) -> Path:
    """The cache folder for the conversion of the GGUF file with this sha256."""
    return models_dir() / f"{prefix}-{cache_key(**conversion_provenance(sha256))}"


def convert_gguf(gguf_path: Path, out_dir: Path, sha256: str | None = None) -> Path:
    """Load ``gguf_path`` with transformers (dequantising to float32) and save it to ``out_dir``
    with its provenance."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    log.info("dequantising %s (once; later loads use %s)", gguf_path.name, out_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot read GGUF file {gguf_path}: {exc}") from None
    provenance = conversion_provenance(sha256 or file_sha256(gguf_path))
    return save_checkpoint(
        model.state_dict(),
        model.config,
        tokenizer,
        out_dir,
        extra_files={SOURCE_FILE: provenance},
        overwrite=True,
    )


def cached_gguf(gguf_path: Path) -> Path:
    """The cached Hugging Face folder for a GGUF file, converting it if needed."""
    sha256 = file_sha256(gguf_path)
    return build_once(
        conversion_dir(f"gguf-{sha256[:16]}", sha256),
        "model.safetensors",
        lambda out_dir: convert_gguf(gguf_path, out_dir, sha256),
    )
