"""The toolchain under the numbers: the self-check every loaded model passes, the adapter for
transformers 5.24's cache keyword, the lock's versions, and cache keys that follow the code and
the library versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
from transformers import DynamicCache

from remnant.errors import ToolchainError
from remnant.models import embedded_dir, load_model
from remnant.models import gguf as gguf_module
from remnant.models import tiny as tiny_module
from remnant.models.embedded import SMOLLM2_NAME, SMOLLM2_SHA256
from remnant.models.toolchain import TESTED_VERSIONS, _cache_keyword_adapter

ROOT = Path(__file__).resolve().parents[1]


def test_loaded_model_carries_a_passed_self_check(tiny):
    report = tiny.toolchain
    assert report["bridge_max_abs_diff"] <= report["tolerance"]
    assert report["cache_max_abs_diff"] <= report["tolerance"] < 0.01
    assert report["decoder_cache_max_abs_diff"] <= report["tolerance"]
    assert set(report["versions"]) == set(TESTED_VERSIONS)


def test_a_broken_kv_cache_path_stops_loading(monkeypatch):
    """What transformers 5.24 did to TransformerLens 4.3: the cache update is skipped."""
    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", lambda self, k, v, **kwargs: (k, v))
    with pytest.raises(ToolchainError) as caught:
        load_model("tiny-synthetic")
    message = str(caught.value)
    assert "cached incremental decoding differs from a full forward" in message
    assert "TransformerBridge's logits" not in message  # full forwards stay exact
    for package in TESTED_VERSIONS:
        assert f"{package} " in message
    assert "requirements.lock" in message


def test_a_bridge_that_changes_the_model_stops_loading(monkeypatch):
    boot = TransformerBridge.boot_transformers

    def boot_and_perturb(*args, **kwargs):
        bridge = boot(*args, **kwargs)
        bridge.add_hook("blocks.1.hook_out", lambda tensor, hook: tensor + 0.5)
        return bridge

    monkeypatch.setattr(TransformerBridge, "boot_transformers", boot_and_perturb)
    with pytest.raises(ToolchainError, match="TransformerBridge's logits differ"):
        load_model("tiny-synthetic")


def test_a_plain_decoding_twin_that_computes_otherwise_stops_loading(monkeypatch):
    from remnant.models import loading

    build = loading.plain_twin

    def detuned(hf_model, parameters):
        twin = build(hf_model, parameters)
        twin.model.norm.weight = torch.nn.Parameter(twin.model.norm.weight.detach() + 0.5)
        return twin

    monkeypatch.setattr(loading, "plain_twin", detuned)
    with pytest.raises(ToolchainError, match="through the plain twin differs"):
        load_model("tiny-synthetic")


def test_adapter_passes_a_cache_keyword_on_as_past_key_values():
    adapted = _cache_keyword_adapter(lambda self, k, v, **kwargs: kwargs)
    cache = DynamicCache()
    k = v = torch.zeros(1)
    assert adapted(None, k, v, cache=cache) == {"past_key_values": cache}
    assert adapted(None, k, v, past_key_values=cache) == {"past_key_values": cache}
    assert adapted(None, k, v, cache="not a cache") == {"cache": "not a cache"}
    assert adapted(None, k, v) == {}


def test_tested_versions_are_the_locked_ones():
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", lock, flags=re.MULTILINE))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    assert "torch" not in pins, "torch is installed from constraints.txt, before the lock"
    constraints = (ROOT / "constraints.txt").read_text()
    assert f"torch=={TESTED_VERSIONS['torch']}" in constraints
    for package in ("transformers", "transformer-lens"):
        assert pins[package] == TESTED_VERSIONS[package]


def test_tiny_cache_key_follows_code_and_library_versions(monkeypatch):
    config = tiny_module.TinyConfig()
    key = config.key()
    info = json.loads((embedded_dir("tiny-synthetic") / "remnant-tiny.json").read_text())
    assert tiny_module.tiny_model_path(config).name.endswith(key)
    assert info["versions"] == tiny_module.provenance()["versions"]
    assert info["code"] == tiny_module.provenance()["code"]
    monkeypatch.setattr(
        tiny_module, "installed_versions", lambda packages: dict.fromkeys(packages, "0.0")
    )
    assert config.key() != key
    monkeypatch.undo()
    monkeypatch.setattr(tiny_module, "source_digest", lambda *modules: "other code")
    assert config.key() != key


def test_converted_gguf_cache_key_follows_library_versions(monkeypatch):
    folder = gguf_module.conversion_dir(SMOLLM2_NAME, SMOLLM2_SHA256)
    assert folder.name.startswith(SMOLLM2_NAME)
    assert gguf_module.conversion_dir(SMOLLM2_NAME, "0" * 64) != folder
    monkeypatch.setattr(
        gguf_module, "installed_versions", lambda packages: dict.fromkeys(packages, "0.0")
    )
    assert gguf_module.conversion_dir(SMOLLM2_NAME, SMOLLM2_SHA256) != folder
