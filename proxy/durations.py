"""Durations in config are written with a unit ("500ms", "2s", "1m", "1h").

A bare number is refused on purpose: "timeout: 5" is ambiguous (seconds? ms?)
and that ambiguity is a classic source of production outages.

Bounded and exact. A duration is at most MAX_SECONDS (30 days; no timeout,
interval or ttl a real deployment uses comes near it) and is read with at
most 12 digits before and 9 after the point, so a value can neither become
infinity nor take long to read. Parsing goes through Decimal (the float is the
correctly rounded value of what was written), and `format_duration` writes
the shortest spelling that parses back to exactly the same float: GET /config
can always be sent back as PUT /config.
"""
from __future__ import annotations

import re
from decimal import Decimal

MAX_SECONDS = 30 * 24 * 3600.0
_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_PATTERN = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h)\s*$")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


def parse_duration(value: object) -> float:
    """Return seconds as a float, or raise ValueError saying how to write it."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '500ms' or '2s', got {value!r}")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        shown = _show(value)
        raise ValueError(f"a duration needs a unit: write e.g. '{shown}s' or '{shown}ms', "
                         f"not {shown}")
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '500ms' or '2s', got "
                         f"{type(value).__name__}")
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"bad duration {_show(value)}: write a number (up to 12 digits, "
                         "9 after the point) and a unit (ms, s, m, h), e.g. '500ms'")
    number, unit = match.groups()
    seconds = Decimal(number) * _UNITS[unit]
    if seconds > Decimal(int(MAX_SECONDS)):
        raise ValueError(f"duration {_show(value)} is above the limit of 30 days "
                         f"({format_duration(MAX_SECONDS)}); no setting needs that long")
    return float(seconds)


def _plain(d: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 1.50 -> '1.5', 1E+2 -> '100'."""
    text = format(d.normalize(), "f")
    return text


def format_duration(seconds: float) -> str:
    """The shortest readable spelling that parses back to `seconds` exactly.

    0.5 -> '500ms', 30 -> '30s', 120 -> '2m', 7200 -> '2h'; when the readable
    unit cannot write it exactly, seconds with every digit the float needs.
    """
    if seconds == 0:
        return "0s"
    exact = Decimal(repr(float(seconds)))
    if seconds >= 3600 and exact % 3600 == 0:
        unit = "h"
    elif seconds >= 60 and exact % 60 == 0:
        unit = "m"
    elif seconds >= 1:
        unit = "s"
    else:
        unit = "ms"
    # The readable unit first; another unit when it would need too many digits.
    for other in (unit, "ms", "s", "m", "h"):
        candidate = _plain(exact / _UNITS[other]) + other
        try:
            if parse_duration(candidate) == seconds:
                return candidate
        except ValueError:
            continue
    # Not reachable for values parse_duration made; kept exact for any other float.
    return _plain(exact) + "s"
