"""What the three record keepers share: the settings they find their files from, and the
checks of the counts they store."""

from __future__ import annotations

import math
from typing import Any

from amalfa.settings import Settings, load_settings

__all__ = ["count_value", "megabytes_value", "settings_or_load"]


def settings_or_load(settings: Settings | None) -> Settings:
    return settings if settings is not None else load_settings()


def count_value(value: Any, name: str) -> int:
    """``value`` as a count (an int >= 0; a whole float is accepted, as JSON may write one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        if isinstance(value, float) and value.is_integer() and value >= 0:
            return int(value)
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def megabytes_value(value: Any, name: str) -> float:
    """``value`` as a finite size in megabytes >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)
