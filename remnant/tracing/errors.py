"""Errors a user can cause in tracing (candidates for ``remnant.errors``)."""

from __future__ import annotations

from remnant.errors import RemnantError


class TracingError(RemnantError):
    """Tracing cannot run as asked (no item names its subject, invalid settings)."""
