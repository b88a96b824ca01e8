"""Durations in config are written with a unit ("500ms", "2s", "1m", "1h").

A bare number is refused on purpose: "timeout: 5" is ambiguous (seconds? ms?)
and that ambiguity is a classic source of production outages.
"""
from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")


def parse_duration(value: object) -> float:
    """Return seconds as a float, or raise ValueError saying how to write it."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '500ms' or '2s', got {value!r}")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise ValueError(
            f"a duration needs a unit: write '{value}s' or '{value}ms', not {value!r}"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '500ms' or '2s', got {value!r}")
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(
            f"bad duration {value!r}: write a number and a unit (ms, s, m, h), e.g. '500ms'"
        )
    number, unit = match.groups()
    return float(number) * _UNITS[unit]


def format_duration(seconds: float) -> str:
    """The shortest readable spelling: 0.5 -> '500ms', 30 -> '30s'."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
