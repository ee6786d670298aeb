"""Where remnant keeps converted and trained models: ``$REMNANT_HOME`` (default
``~/.cache/remnant``), in folders keyed by everything that shapes their content."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from filelock import FileLock


def remnant_home() -> Path:
    """The cache root, created on first use."""
    root = Path(os.environ.get("REMNANT_HOME", Path.home() / ".cache" / "remnant")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


T = TypeVar("T")


class Memo(Generic[T]):
    """Values computed in this process, by key (`cache_key` of everything that shapes them):
    the ``size`` most recently used are kept. For what an audit computes again for every model
    it audits (the original's probes, the controls' attack scores)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str, compute: Callable[[], T]) -> T:
        """A copy of the value kept under ``key``, else of ``compute()`` kept under it (copies:
        a caller that changes what it got cannot change what the next caller gets)."""
        if key not in self._values:
            self.put(key, compute())
        return copy.deepcopy(self.find(key))

    def find(self, key: str) -> T | None:
        """The value kept under ``key`` (not a copy), or None; marks it recently used."""
        if key not in self._values:
            return None
        self._values.move_to_end(key)
        return self._values[key]

    def put(self, key: str, value: T) -> None:
        """Keep ``value`` under ``key`` as the most recently used, dropping the least recently
        used beyond ``size``."""
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def clear(self) -> None:
        self._values.clear()


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


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold the inter-process lock of the cache entry ``path`` (a file ``path`` + ``.lock``
    beside it): processes that build the same entry at once (pytest-xdist workers, sweep tasks)
    take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        yield


def build_once(path: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """The cache folder ``path``, calling ``build(path)`` first unless ``path / marker`` exists.
    The build runs under `cache_lock`: a process that finds another one building the same
    folder waits for it and then uses its folder."""
    if not (path / marker).exists():
        with cache_lock(path):
            if not (path / marker).exists():
                build(path)
    return path
