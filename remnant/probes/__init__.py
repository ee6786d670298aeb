"""Probes: activation extraction, linear probes with controls, logit-lens readout.

Run them as `remnant.probes.linear.run` and `remnant.probes.lens.run`. The classes below are
imported on first use, so that `remnant.probes.activations` (used by every analysis) does not
load scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remnant.probes.lens import LensResult, LensSettings
    from remnant.probes.linear import ProbeResult, ProbeSettings

_HOMES = {
    "LensResult": "remnant.probes.lens",
    "LensSettings": "remnant.probes.lens",
    "ProbeResult": "remnant.probes.linear",
    "ProbeSettings": "remnant.probes.linear",
}

__all__ = ["LensResult", "LensSettings", "ProbeResult", "ProbeSettings"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
