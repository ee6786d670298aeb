"""`Result`: the frozen, versioned, JSON-round-tripping value every analysis returns.

A result's JSON holds its ``kind`` (which analysis made it) and ``schema_version`` (the layout
of its fields) beside the fields. Loading checks both and the field names, so results saved by
another analysis or another version of remnant are refused with a `ResultFormatError` that says
which, never loaded half-right.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from remnant.errors import ResultFormatError
from remnant.io import write_text_atomic

R = TypeVar("R", bound="Result")

#: Every Result class by its kind.
RESULT_KINDS: dict[str, type[Result]] = {}


@dataclasses.dataclass(frozen=True)
class Result:
    """Base class for analysis results: plain values only (numbers, strings, lists, dicts).

    Subclasses set ``kind`` (unique) and ``schema_version`` (raised whenever a field is added,
    removed, renamed or changes meaning), document each field where it is declared, and give a
    `summary` of their headline numbers.
    """

    kind: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = vars(cls).get("kind")
        if not kind:
            raise TypeError(f"{cls.__name__} must set a class attribute `kind`")
        if kind in RESULT_KINDS and RESULT_KINDS[kind].__qualname__ != cls.__qualname__:
            raise TypeError(f"result kind {kind!r} is taken by {RESULT_KINDS[kind].__name__}")
        RESULT_KINDS[kind] = cls

    def summary(self) -> Any:
        """The headline numbers, as plain values."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "schema_version": self.schema_version} | dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[R], data: Any, source: str = "data") -> R:
        """The result ``data`` describes; `ResultFormatError` if it is of another kind or
        schema version, or its fields differ from this version's."""
        if not isinstance(data, dict):
            raise ResultFormatError(f"{source} is not a saved result (not a JSON object)")
        kind, version = data.get("kind"), data.get("schema_version")
        if kind != cls.kind:
            found = f"a {kind!r} result" if kind else "no result kind"
            raise ResultFormatError(f"{source} holds {found}, not a {cls.kind!r} result")
        if version != cls.schema_version:
            raise ResultFormatError(
                f"{source} is a {kind!r} result of schema version {version}; this remnant reads "
                f"version {cls.schema_version}: run the analysis again"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        given = set(data) - {"kind", "schema_version"}
        missing, unknown = sorted(names - given), sorted(given - names)
        if missing or unknown:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise ResultFormatError(
                f"{source}: fields of this {kind!r} result do not match schema version "
                f"{version} ({'; '.join(problems)})"
            )
        return cls(**{name: data[name] for name in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls: type[R], text: str, source: str = "JSON text") -> R:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultFormatError(f"{source} is not valid JSON: {exc}") from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result as JSON to ``path``, atomically."""
        write_text_atomic(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """The result saved at ``path`` (see `from_dict`)."""
        path = Path(path)
        if not path.is_file():
            raise ResultFormatError(f"no saved result at {path}")
        return cls.from_json(path.read_text("utf-8"), str(path))
