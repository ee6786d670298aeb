"""Targets: what should be forgotten, validated on load, from native or public formats."""

from remnant.targets.loaders import FORMATS, detect_format, load_builtin_target, load_target
from remnant.targets.model import MatchMode, MCQItem, QAItem, Target, Variant, strip_text

__all__ = [
    "FORMATS",
    "MCQItem",
    "MatchMode",
    "QAItem",
    "Target",
    "Variant",
    "detect_format",
    "load_builtin_target",
    "load_target",
    "strip_text",
]
