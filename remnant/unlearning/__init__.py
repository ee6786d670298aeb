"""Reference unlearning methods, used to make unlearned checkpoints for demos, tests and baselines.

GA (gradient ascent), GradDiff (gradient difference), NPO (Zhang et al., 2024), RMU (Li et al.,
2024) and, for the tiny synthetic model only, ``retrain`` (the gold model: exact unlearning).
`unlearn.run` trains a copy of a model and writes it as a new checkpoint with its
`UnlearningResult`; `cached_run` does it once per model, target, settings and code.
"""

from remnant.unlearning.config import (
    METHODS,
    PRESETS,
    GAConfig,
    GradDiffConfig,
    NPOConfig,
    RMUConfig,
    TrainingConfig,
    default_config,
)
from remnant.unlearning.unlearn import (
    REPORT_FILE,
    UnlearningResult,
    UnlearningSettings,
    cached_run,
)

__all__ = [
    "METHODS",
    "PRESETS",
    "REPORT_FILE",
    "GAConfig",
    "GradDiffConfig",
    "NPOConfig",
    "RMUConfig",
    "TrainingConfig",
    "UnlearningResult",
    "UnlearningSettings",
    "cached_run",
    "default_config",
]
