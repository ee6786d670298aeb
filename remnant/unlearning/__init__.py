"""Reference unlearning methods, used to make unlearned checkpoints for demos, tests and baselines.

GA (gradient ascent), GradDiff (gradient difference), NPO (Zhang et al., 2024), RMU (Li et al.,
2024) and, for the tiny synthetic model only, ``retrain`` (the gold model: exact unlearning).
"""

from remnant.errors import RetrainUnavailableError, UnlearningError
from remnant.unlearning.api import REPORT_FILE, accuracies, run_unlearning, unlearn
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

__all__ = [
    "METHODS",
    "PRESETS",
    "REPORT_FILE",
    "GAConfig",
    "GradDiffConfig",
    "NPOConfig",
    "RMUConfig",
    "RetrainUnavailableError",
    "TrainingConfig",
    "UnlearningError",
    "accuracies",
    "default_config",
    "run_unlearning",
    "unlearn",
]
