"""The analysis contract: one public import, settings checked once, versioned Results, one
errors module."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys

import pytest

import remnant
from remnant import errors
from remnant.results import RESULT_KINDS, Result
from remnant.settings import SHARED, Settings


def _settings_classes() -> list[type[Settings]]:
    for name in remnant.__all__:
        getattr(remnant, name)  # load every analysis module
    found, pending = [], [Settings]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending += cls.__subclasses__()
    return [cls for cls in found if cls.__module__.startswith("remnant.")]


def test_import_remnant_is_light_and_every_public_name_resolves():
    code = "import remnant, sys; print('torch' in sys.modules, len(remnant.__all__))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", str(len(remnant.__all__))]
    for name in remnant.__all__:
        assert getattr(remnant, name) is not None, name
    with pytest.raises(AttributeError):
        remnant.no_such_name  # noqa: B018


def test_every_analysis_is_models_then_target_then_settings():
    analyses = ["evaluate", "probe", "logit_lens", "trace", "diff", "locate", "validate"]
    analyses += ["compare", "ablate", "unlearn"]
    analyses += ["in_context_attack", "reasoning_attack", "variant_attack", "membership_inference"]
    analyses += ["relearn_attack", "embedding_attack", "quantization_attack"]
    for name in analyses:
        parameters = list(inspect.signature(getattr(remnant, name)).parameters.values())
        names = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert names[-2:] == ["target", "settings"], (name, names)
        assert names[:-2] in (["model"], ["original", "unlearned"]), (name, names)


@pytest.mark.parametrize("field", ["prompt_style", "batch_size", "seed"])
def test_shared_settings_are_checked_in_every_settings_class(field):
    bad = {"prompt_style": "Chat", "batch_size": 0, "seed": 1.5}[field]
    checked = 0
    for cls in _settings_classes():
        if field not in {f.name for f in dataclasses.fields(cls)}:
            continue
        required = {"method": "npo"} if cls.__name__ == "UnlearningSettings" else {}
        required |= {"n_vectors": 1} if cls.__name__ == "AblateSettings" else {}
        with pytest.raises(errors.SettingsError, match=rf"{cls.__name__}\.{field} must be"):
            cls(**required, **{field: bad})
        checked += 1
    assert checked >= 5
    assert field in SHARED


def test_settings_are_keyword_only_and_recorded_as_plain_values():
    settings = remnant.ProbeSettings(tasks=["recall"], Cs=[0.1, 1.0])
    with pytest.raises(TypeError):
        remnant.ScoringSettings("chat")  # type: ignore[misc]
    recorded = settings.record(prompt_style="plain")
    assert recorded["tasks"] == ["recall"] and recorded["prompt_style"] == "plain"
    json.dumps(recorded)


def test_every_result_has_a_kind_a_version_and_a_summary():
    for name in remnant.__all__:
        getattr(remnant, name)
    assert {"eval", "probes", "lens", "trace", "diff", "locate", "validate"} <= set(RESULT_KINDS)
    assert {"compare", "ablate", "unlearning", "attack", "mia"} <= set(RESULT_KINDS)
    assert {"relearn", "embedding", "quantize"} <= set(RESULT_KINDS)
    for kind, cls in RESULT_KINDS.items():
        if not cls.__module__.startswith("remnant."):
            continue
        assert cls.kind == kind and cls.schema_version >= 1
        assert cls.summary is not Result.summary, f"{cls.__name__} has no summary()"


@dataclasses.dataclass(frozen=True)
class _Toy(Result):
    kind = "toy-for-tests"
    value: float
    """A number."""

    def summary(self) -> float:
        return self.value


def test_loading_a_result_of_another_kind_version_or_shape_says_which(tmp_path):
    path = _Toy(0.5).save(tmp_path / "toy.json")
    assert _Toy.load(path) == _Toy(0.5)
    data = json.loads(path.read_text())
    for change, message in [
        ({"kind": "eval"}, "holds a 'eval' result, not a 'toy-for-tests' result"),
        ({"schema_version": 7}, "schema version 7; this remnant reads version 1"),
        ({"extra": 1}, "unknown extra"),
    ]:
        with pytest.raises(errors.ResultFormatError, match=message):
            _Toy.from_dict(data | change)
    with pytest.raises(errors.ResultFormatError, match="missing value"):
        _Toy.from_dict({"kind": "toy-for-tests", "schema_version": 1})
    with pytest.raises(errors.ResultFormatError, match="no saved result"):
        _Toy.load(tmp_path / "none.json")


def test_errors_live_in_one_module_and_mix_in_builtins():
    assert issubclass(errors.OutputExistsError, FileExistsError)
    assert issubclass(errors.SettingsError, ValueError)
    assert issubclass(errors.ModelNotFoundError, FileNotFoundError)
    assert issubclass(errors.ToolchainError, RuntimeError)
    for name in ("tracing", "concept_vectors", "unlearning"):
        with pytest.raises(ModuleNotFoundError):
            __import__(f"remnant.{name}.errors")
