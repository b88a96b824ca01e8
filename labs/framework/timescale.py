"""Lab time and production time.

Real timings would make labs slow (a 300-s drain, a 30-s health-check interval), so each
lab runs on a stated time scale: ``TimeScale(10)`` means one second in the lab stands for
ten seconds in production. The proxy really runs with the lab's numbers (a 0.5 s interval);
every figure a learner sees is shown in both, e.g. "0.6 s in the lab = 6 s in production
at 1:10". Latencies of single requests (a 20 ms answer) are not scaled: the scale is about
the slow clocks of operations (intervals, thresholds, delays, windows).
"""
from __future__ import annotations

from dataclasses import dataclass


def fmt_seconds(seconds: float) -> str:
    """Short human spelling: 0.042 -> '42 ms', 0.6 -> '0.6 s', 12 -> '12 s', 300 -> '5 min'."""
    if seconds is None:
        return "?"
    s = float(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s == 0:
        return "0 s"
    if s < 1:
        ms = s * 1000
        return f"{sign}{ms:.0f} ms" if ms >= 10 else f"{sign}{ms:.1f} ms"
    if s < 120:
        text = f"{s:.1f}".rstrip("0").rstrip(".") if s < 10 else f"{s:.0f}"
        return f"{sign}{text} s"
    if s < 7200:
        minutes = s / 60
        text = f"{minutes:.1f}".rstrip("0").rstrip(".")
        return f"{sign}{text} min"
    return f"{sign}{s / 3600:.1f} h"


@dataclass(frozen=True)
class TimeScale:
    factor: float = 1.0  # production seconds per lab second

    def __post_init__(self):
        if not (isinstance(self.factor, (int, float)) and 1 <= self.factor <= 1000):
            raise ValueError(f"time_scale must be a number from 1 to 1000, got {self.factor!r}")

    @property
    def label(self) -> str:
        return f"1:{self.factor:g}"

    def prod(self, lab_seconds: float) -> float:
        return lab_seconds * self.factor

    def lab(self, prod_seconds: float) -> float:
        return prod_seconds / self.factor

    def both(self, lab_seconds: float) -> str:
        """'0.6 s in the lab = 6 s in production at 1:10' (just the lab figure at 1:1)."""
        if self.factor == 1:
            return f"{fmt_seconds(lab_seconds)} (lab and production alike, 1:1)"
        return (f"{fmt_seconds(lab_seconds)} in the lab = {fmt_seconds(self.prod(lab_seconds))} "
                f"in production at {self.label}")

    def short(self, lab_seconds: float) -> str:
        """'0.6 s (6 s prod)': for tables and chart labels."""
        if self.factor == 1:
            return fmt_seconds(lab_seconds)
        return f"{fmt_seconds(lab_seconds)} ({fmt_seconds(self.prod(lab_seconds))} prod)"

    def to_json(self) -> dict:
        return {"factor": self.factor, "label": self.label}
