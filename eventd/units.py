"""Parsing of the human units used in the config: durations (`500ms`, `30s`, `5m`, `1h`)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

DURATION_HINT = "a duration like 500ms, 30s, 5m or 1h"


def parse_duration(value: object) -> float:
    """Return seconds for `value`: a string with a unit, or a bare number of seconds.

    Raises ValueError with a message that says what was expected.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected {DURATION_HINT}, not a negative number")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
    raise ValueError(f"expected {DURATION_HINT}")


def format_duration(seconds: float) -> str:
    """The shortest config spelling of `seconds` (the inverse of parse_duration for round values)."""
    for unit in ("d", "h", "m", "s"):
        size = _SECONDS_PER_UNIT[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"
