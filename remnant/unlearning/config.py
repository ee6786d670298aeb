"""Hyperparameters of the reference unlearning methods: one frozen dataclass per method.

Class defaults follow the papers where they fix a value (NPO β = 0.1; RMU layer 7, steering
coefficient 6.5, α = 1200, learning rate 5e-5, batch 4, 150 steps, the MLPs of layers ℓ-2..ℓ
(the authors' code trains only their down-projections; pass ``modules=("mlp.down_proj",)`` for
that); GA/GradDiff learning rate 1e-5 and batch 32 as in TOFU). `PRESETS` holds the values
tuned for the embedded models: for SmolLM2-135M-Instruct on the built-in demo target (measured
with `remnant unlearn`), and for the tiny model in the unlearning tests. RMU's steering
coefficient is an absolute norm: SmolLM2's residual stream after layer 7 has a median norm of
about 120, so its preset uses c = 300 where the paper's 6.5 suits Zephyr-7B.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from remnant.unlearning.errors import UnlearningError

METHODS = ("ga", "graddiff", "npo", "rmu", "retrain")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """What every gradient-based method shares.

    ``lr``: AdamW learning rate (constant, no weight decay). ``steps``: optimizer steps; each
    takes the next ``batch_size`` forget examples (and as many retain examples when the method has
    a retain term) from passes over the data reshuffled with ``seed``. ``seed`` also fixes LoRA
    initialisation and RMU's random vector. ``layers``: decoder layers whose parameters are
    trained (None: every parameter, embeddings and norms included). ``modules``: name fragments a
    trained parameter must contain, such as ``"mlp."`` (empty: no filter). ``lora_rank``: 0 trains
    the selected parameters themselves; r > 0 trains rank-r LoRA adapters (scale
    ``lora_alpha / r``) on the selected linear weights and merges them in afterwards.
    ``passages``: also train on the target's forget passages (and unrelated passages on the
    retain side), with the language-model loss on every token.
    """

    lr: float = 1e-5
    steps: int = 50
    batch_size: int = 32
    seed: int = 0
    layers: tuple[int, ...] | None = None
    modules: tuple[str, ...] = ()
    lora_rank: int = 0
    lora_alpha: float = 16.0
    passages: bool = True

    def __post_init__(self) -> None:
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "modules", tuple(str(m) for m in self.modules))
        _require(self.lr > 0, "the learning rate must be positive")
        _require(self.steps >= 1 and self.batch_size >= 1, "steps and batch size must be >= 1")
        _require(self.lora_rank >= 0 and self.lora_alpha > 0, "LoRA rank >= 0 and alpha > 0")
        _require(
            self.layers is None or (len(self.layers) > 0 and min(self.layers) >= 0),
            "layers must be a non-empty list of layer indices (omit it to train every parameter)",
        )


@dataclasses.dataclass(frozen=True)
class GAConfig(TrainingConfig):
    """Gradient ascent: maximise the mean per-token NLL of the forget answers (and passages)."""


@dataclasses.dataclass(frozen=True)
class GradDiffConfig(TrainingConfig):
    """Gradient difference: minimise −NLL(forget) + ``retain_weight`` · NLL(retain)."""

    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.retain_weight >= 0, "the retain weight must be >= 0")


@dataclasses.dataclass(frozen=True)
class NPOConfig(TrainingConfig):
    """Negative preference optimisation (Zhang et al., 2024): minimise
    −(2/β)·mean log σ(−β·log(π_θ(y|x)/π_ref(y|x))) over forget examples, plus
    ``retain_weight`` · NLL(retain) (0: plain NPO; > 0: NPO with a retain term)."""

    beta: float = 0.1
    retain_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.beta > 0, "beta must be positive")
        _require(self.retain_weight >= 0, "the retain weight must be >= 0")


@dataclasses.dataclass(frozen=True)
class RMUConfig(TrainingConfig):
    """Representation misdirection (Li et al., 2024): minimise
    MSE(h_ℓ(forget), c·u) + ``alpha`` · MSE(h_ℓ(retain), h_ℓ^frozen(retain)), where h_ℓ is the
    residual stream after decoder layer ``layer``, u a fixed random unit vector (entries uniform
    in [0, 1), normalised) and c the ``steering_coeff``. Each MSE averages over model dimensions
    and tokens per example, then over examples. Forget tokens are every token of the example's
    own text (for a QA item: question, template tokens after it, and answer; not the prompt
    template's fixed opening, which retain items share); retain tokens are all tokens.
    ``layers=None`` trains layers ℓ-2..ℓ, as in the paper; trained layers must not lie above ℓ."""

    lr: float = 5e-5
    steps: int = 150
    batch_size: int = 4
    modules: tuple[str, ...] = ("mlp.",)
    layer: int = 7
    steering_coeff: float = 6.5
    alpha: float = 1200.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.layer >= 0, "the RMU layer must be >= 0")
        _require(self.steering_coeff > 0 and self.alpha >= 0, "need steering_coeff > 0, alpha >= 0")
        _require(
            self.layers is None or max(self.layers) <= self.layer,
            f"RMU trains layers up to its layer {self.layer}; layers {self.layers} go above it",
        )

    @property
    def trained_layers(self) -> tuple[int, ...]:
        return self.layers or tuple(range(max(0, self.layer - 2), self.layer + 1))


CONFIGS: dict[str, type[TrainingConfig]] = {
    "ga": GAConfig,
    "graddiff": GradDiffConfig,
    "npo": NPOConfig,
    "rmu": RMUConfig,
}

#: Values tuned for the embedded models (model name → method → overrides of the class defaults).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny-synthetic": {
        "ga": {
            "lr": 5e-4,
            "steps": 36,
            "batch_size": 24,
            "layers": (3,),
            "modules": ("self_attn.o_proj", "self_attn.v_proj"),
            "passages": False,
        },
        "graddiff": {"lr": 3e-4, "steps": 18, "batch_size": 16},
        "npo": {"lr": 3e-4, "steps": 24, "batch_size": 16, "retain_weight": 1.0},
        "rmu": {
            "lr": 1e-3,
            "steps": 40,
            "batch_size": 8,
            "layer": 2,
            "steering_coeff": 60.0,
            "alpha": 30.0,
        },
    },
    "smollm2-135m-instruct": {
        "ga": {
            "lr": 1e-4,
            "steps": 11,
            "batch_size": 8,
            "layers": (24, 25, 26, 27, 28, 29),
            "modules": ("mlp.",),
            "passages": False,
        },
        "graddiff": {
            "lr": 3e-5,
            "steps": 12,
            "batch_size": 8,
            "passages": False,
            "retain_weight": 3.0,
        },
        "npo": {"lr": 2e-5, "steps": 12, "batch_size": 8, "retain_weight": 1.0},
        "rmu": {
            "lr": 1e-3,
            "steps": 150,
            "batch_size": 4,
            "layer": 7,
            "steering_coeff": 300.0,
            "alpha": 100.0,
        },
    },
}


def default_config(method: str, model_name: str | None = None) -> TrainingConfig:
    """The class defaults of ``method``, with the preset for ``model_name`` if there is one."""
    return config_class(method)(**PRESETS.get(model_name or "", {}).get(method, {}))


def config_class(method: str) -> type[TrainingConfig]:
    if method not in CONFIGS:
        raise UnlearningError(
            f"no trainable unlearning method {method!r}; choose one of: {', '.join(CONFIGS)}"
        )
    return CONFIGS[method]


def with_overrides(config: TrainingConfig, overrides: dict[str, Any]) -> TrainingConfig:
    """``config`` with some hyperparameters replaced; names it does not have are refused."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UnlearningError(
            f"{type(config).__name__} has no hyperparameter {', '.join(unknown)}; "
            f"it has: {', '.join(sorted(names))}"
        )
    return dataclasses.replace(config, **overrides)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UnlearningError(message)
