"""Where remnant keeps converted and trained models: ``$REMNANT_HOME`` (default
``~/.cache/remnant``), in folders keyed by everything that shapes their content."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any


def remnant_home() -> Path:
    """The cache root, created on first use."""
    root = Path(os.environ.get("REMNANT_HOME", Path.home() / ".cache" / "remnant")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    path = remnant_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(**parts: Any) -> str:
    """12 hex digits of sha256 over ``parts`` (JSON, sorted keys): name a cache folder by
    everything that shapes its content, so that a change to any of them misses the cache."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(*modules: ModuleType) -> str:
    """sha256 (16 hex digits) over the source files of ``modules``: the code that made a cache."""
    files = "".join(file_sha256(Path(module.__file__ or "")) for module in modules)
    return hashlib.sha256(files.encode()).hexdigest()[:16]
