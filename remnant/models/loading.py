"""`load_model`: one entry point for embedded names, local folders, Hub ids, GGUF files and
LoRA adapters."""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
from pathlib import Path

import torch

from remnant.errors import ModelLoadError, ModelNotFoundError
from remnant.models.accounting import count_tokens
from remnant.models.decoder import plain_twin
from remnant.models.embedded import EMBEDDED, embedded_dir
from remnant.models.gguf import cached_gguf
from remnant.models.model import Model
from remnant.models.toolchain import check_batch, install_adapters, reference_logits, self_check

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_spec(spec: str) -> str:
    """The local folder (or Hub id) that ``spec`` names, preparing embedded and GGUF models."""
    if spec in EMBEDDED:
        return str(embedded_dir(spec))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return str(cached_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"{path} is a folder but holds no config.json (not a Hugging Face model)"
            )
        return str(path)
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is a file; pass a Hugging Face model folder or a .gguf file"
        )
    if _HUB_ID.match(spec) and not spec.startswith((".", "/")):
        return spec
    raise ModelNotFoundError(
        f"no model {spec!r}: pass an embedded name ({', '.join(EMBEDDED)}), a Hugging Face "
        f"folder, a Hub id (org/name) or a .gguf file"
    )


def load_model(
    spec: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    device_map: str | dict | None = None,
    adapter: str | Path | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    name: str | None = None,
) -> Model:
    """Load a model and hook it through TransformerLens.

    ``spec`` is an embedded name, a local Hugging Face folder, a Hub id or a ``.gguf`` file;
    ``adapter`` is a PEFT LoRA folder merged on top. CPU float32 unless told otherwise.
    Pickle checkpoints are refused unless ``allow_pickle``; remote code unless
    ``trust_remote_code``.
    Every model passes the toolchain self-check (`remnant.models.toolchain`) or raises
    `ToolchainError`.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_spec(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        hf_model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype or torch.float32,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except OSError as exc:
        raise _explain_load_failure(spec, path, exc, allow_pickle) from None
    if adapter is not None:
        hf_model = _merge_adapter(hf_model, Path(adapter))
    if device is not None and device_map is None:
        hf_model = hf_model.to(device)
    hf_model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    parameters = dict(hf_model.state_dict(keep_vars=True))
    batch = check_batch(tokenizer, next(hf_model.parameters()).device)
    reference = reference_logits(hf_model, batch)
    install_adapters()
    bridge = TransformerBridge.boot_transformers(path, hf_model=hf_model, tokenizer=tokenizer)
    count_tokens(hf_model)
    name = name or _display_name(spec)
    decoder = plain_twin(hf_model, parameters)
    toolchain = self_check(name, bridge, batch, reference, decoder)
    source = spec if adapter is None else f"{spec} + adapter {adapter}"
    return Model(bridge, tokenizer, name, source, parameters, toolchain, decoder)


def load_copy(model: Model) -> Model:
    """A separate copy of ``model`` (same weights, dtype, device, name and source) that the
    caller may edit: its weights written to a temporary folder and loaded from there (the
    self-check included)."""
    with tempfile.TemporaryDirectory(prefix="remnant-copy-") as tmp:
        model.save(Path(tmp) / "model")
        weights = next(iter(model.parameters.values()))
        copy = load_model(
            str(Path(tmp) / "model"), name=model.name, device=weights.device, dtype=weights.dtype
        )
    return dataclasses.replace(copy, source=model.source)


def _display_name(spec: str) -> str:
    return spec if spec in EMBEDDED else Path(spec).name or spec


def _merge_adapter(hf_model, adapter: Path):
    from peft import PeftModel

    if not (adapter / "adapter_config.json").exists():
        raise ModelNotFoundError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    try:
        return PeftModel.from_pretrained(hf_model, str(adapter)).merge_and_unload()
    except (ValueError, OSError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot apply adapter {adapter}: {exc}") from None


def _explain_load_failure(spec: str, path: str, exc: OSError, allow_pickle: bool) -> Exception:
    local = Path(path)
    if local.is_dir():
        if not allow_pickle and any(local.glob("*.bin")) and not any(local.glob("*.safetensors")):
            return ModelLoadError(
                f"{local} holds only pickle weights (.bin), which can run code when loaded; "
                "convert them to safetensors, or pass allow_pickle=True (--allow-pickle) if you "
                "trust them"
            )
        return ModelLoadError(f"cannot load the model in {local}: {exc}")
    return ModelNotFoundError(
        f"cannot load {spec!r} from the Hugging Face Hub ({exc.__class__.__name__}). If this "
        "machine is offline, download the model elsewhere and pass its folder, or a .gguf file"
    )
