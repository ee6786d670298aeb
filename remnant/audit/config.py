"""Audit configurations: which stages run and each stage's budget, from YAML validated by pydantic.

A config file names stages and, per stage, the fields of its settings class that differ from
their defaults::

    stages: [behaviour, probes, relearn]
    settings:
      relearn: {steps: 8, rtt_rounds: 0}

The named configs ``quick``, ``default`` and ``thorough`` ship in ``remnant/audit/configs``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from remnant.audit.stages import STAGES
from remnant.errors import RemnantError, SettingsError
from remnant.settings import Settings

CONFIGS = Path(__file__).parent / "configs"

#: The configs shipped with remnant, by name.
NAMED_CONFIGS = ("quick", "default", "thorough")


class ConfigError(RemnantError, ValueError):
    """An audit config that cannot be read or names an unknown stage or setting."""


class AuditConfig(BaseModel):
    """Stages to run, in the order of `STAGES`, and the settings of each that differ from the
    defaults (field name -> value; lists stand for tuples, mappings for nested settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    stages: list[str] = list(STAGES)
    settings: dict[str, dict[str, Any]] = {}

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            raise ValueError(
                f"unknown stage(s) {', '.join(map(repr, unknown)) or 'none given'}; stages are "
                f"{', '.join(STAGES)}"
            )
        return [s for s in STAGES if s in stages]

    @model_validator(mode="after")
    def _settings_are_valid(self) -> AuditConfig:
        for stage in self.settings:
            if stage not in STAGES:
                raise ValueError(f"settings for unknown stage {stage!r}")
            self.stage_settings(stage)
        return self

    def stage_settings(self, stage: str, seed: int | None = None) -> Settings:
        """The stage's settings object: its class's defaults, this config's values, and
        ``seed`` (when given) as the seed of every random draw."""
        cls = STAGES[stage].settings
        values = {k: _tupled(v) for k, v in self.settings.get(stage, {}).items()}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__} has no setting {', '.join(unknown)} ({stage})")
        for name, value in values.items():
            default = fields[name].default
            if isinstance(default, Settings) and isinstance(value, dict):
                values[name] = type(default)(**{k: _tupled(v) for k, v in value.items()})
        if seed is not None:
            values["seed"] = seed
        try:
            return cls(**values)
        except SettingsError as exc:
            raise ValueError(f"{stage}: {exc}") from None

    def with_stages(self, stages: list[str]) -> AuditConfig:
        """This config restricted to ``stages`` (each must be one it runs)."""
        missing = [s for s in stages if s not in self.stages]
        if missing:
            raise ConfigError(
                f"config {self.name!r} does not run {', '.join(missing)}: it runs "
                f"{', '.join(self.stages)}"
            )
        return self.model_copy(update={"stages": [s for s in self.stages if s in stages]})


def load_config(name_or_path: str | Path) -> AuditConfig:
    """A named config (``quick``, ``default``, ``thorough``) or a YAML file's."""
    path = Path(name_or_path)
    if str(name_or_path) in NAMED_CONFIGS:
        path = CONFIGS / f"{name_or_path}.yaml"
    elif not path.is_file():
        raise ConfigError(
            f"no audit config {str(name_or_path)!r}: give a YAML file or one of "
            f"{', '.join(NAMED_CONFIGS)}"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with 'stages' and 'settings'")
    data.setdefault("name", path.stem if str(name_or_path) in NAMED_CONFIGS else str(path))
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"audit config {path}: {problems}") from None


def _tupled(value: Any) -> Any:
    """YAML lists as tuples, as the settings classes take them."""
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
