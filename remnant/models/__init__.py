"""Loading models under audit (`Model`s): embedded defaults, folders, Hub ids, GGUF, LoRA."""

from remnant.models.embedded import EMBEDDED, embedded_dir, list_models
from remnant.models.loading import load_copy, load_model
from remnant.models.model import Model

__all__ = ["EMBEDDED", "Model", "embedded_dir", "list_models", "load_copy", "load_model"]
