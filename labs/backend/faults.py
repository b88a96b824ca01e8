"""Fault knobs of a toy backend: the model, its validation, and per-request decisions.

Theory of operation
-------------------
The knobs are one table (``KNOBS``): name, kind, default, and what it does. Everything else
is derived from it: validation of a control request, the CLI flags (``__main__``), the README
list, and the defaults ``DELETE /_control/faults`` returns to.

``FaultState`` holds the current ``settings`` (a plain dict, always complete and valid) plus
the one piece of time-dependent state, the instant a warm-up ends. A change is a partial
update: ``apply(patch)`` validates the *whole* patch first and raises ``FaultError`` listing
every problem; only if there is none is anything changed, so a bad request never leaves the
backend half-configured.

For each request the server asks for a decision (``decide_app``, ``decide_ready``,
``decide_live``). Decisions are pure: the clock reading and the random source are passed in,
so a seeded ``random.Random`` makes error rates reproducible and tests need no sockets.
Random numbers are drawn only for rates strictly between 0 and 1, in a fixed order (jitter,
reset, error, crash), so a given seed always yields the same sequence of outcomes.

Which knob touches which endpoint:

* app endpoints (echo, /work, /upload, /login, /profile...): warm-up, reset, hang,
  latency_ms + jitter_ms, cpu_ms, dependency_down, error_rate/error_status,
  crash_mid_response -- checked in that order.
* readiness (/health, /health/ready): warm-up, health_latency_ms, health_fail,
  dependency_down. health_latency_ms is the time of the deep check's dependency query.
* cached readiness (/health/ready/cached): the same without health_latency_ms: the
  instance answers from what it owns (warm-up, its own failure) and from the dependency
  status a background check keeps (dependency_down), without querying per probe.
* liveness (/health/live): only live_latency_ms and live_fail. It stays 200 during warm-up
  and while a dependency is down: the process is alive, which is all liveness claims.
* /_control: never faulted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

MS = "ms"
SECONDS = "seconds"
RATE = "rate"
FLAG = "flag"
FLAG_OR_RATE = "flag_or_rate"
STATUS = "status"
COUNT = "count"
CHOICE = "choice"

MAX_MS = 3_600_000  # one hour: anything longer is a typo, not a lab
MAX_SECONDS = 86_400
MAX_COUNT = 100_000


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()  # kind CHOICE: the values it takes


KNOBS: tuple[Knob, ...] = (
    Knob("latency_ms", MS, 0, "added delay before answering each app request"),
    Knob("jitter_ms", MS, 0, "extra random delay, uniform in [0, jitter_ms], on top of latency_ms"),
    Knob("error_rate", RATE, 0.0, "fraction (0..1) of app requests answered with error_status"),
    Knob("error_status", STATUS, 500, "HTTP status of injected errors (400..599)"),
    Knob("crash_mid_response", FLAG_OR_RATE, False,
         "send the headers and half the body, then close the connection (true = every request, or a rate)"),
    Knob("hang", FLAG, False, "accept app requests and never answer; the socket stays open"),
    Knob("reset", FLAG_OR_RATE, False,
         "close the connection with a TCP RST without answering (true = every request, or a rate)"),
    Knob("health_latency_ms", MS, 0, "added delay on /health and /health/ready"),
    Knob("health_fail", FLAG, False, "/health and /health/ready answer 503"),
    Knob("live_latency_ms", MS, 0, "added delay on /health/live"),
    Knob("live_fail", FLAG, False, "/health/live answers 503"),
    Knob("dependency_down", FLAG, False,
         "the backend's dependency is down: readiness 503 and app requests 503 'dependency down' "
         "(liveness still 200)"),
    Knob("warmup_s", SECONDS, 0,
         "for this many seconds from the moment it is set, app and readiness requests answer 503 'warming up'"),
    Knob("cpu_ms", MS, 0, "burn this much CPU (busy loop, blocks the process) on each app request"),
    Knob("max_in_flight", COUNT, 0,
         "app requests this backend works on at once; one more is shed (see shed); 0 = no limit"),
    Knob("shed", CHOICE, "reset",
         "how a request over max_in_flight is shed: reset (the connection dropped with a TCP "
         "RST, as an overflowing server does) or 429/503 with Retry-After",
         choices=("reset", "429", "503")),
    Knob("shed_retry_after_s", SECONDS, 1,
         "the Retry-After (whole seconds) of a request shed with 429 or 503"),
)

KNOB_BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
DEFAULTS: dict[str, Any] = {k.name: k.default for k in KNOBS}

# Knobs that affect app requests: when all are at rest the server takes its fast path.
_APP_KNOBS = ("latency_ms", "jitter_ms", "error_rate", "crash_mid_response", "hang", "reset",
              "dependency_down", "cpu_ms", "max_in_flight")
_LIVE_KNOBS = ("live_latency_ms", "live_fail")


class FaultError(ValueError):
    """A control request that cannot be applied; ``errors`` says what to change."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def _show(value: Any) -> str:
    """Render a rejected value the way the user typed it (JSON), for error messages."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python; JSON true is not a number of milliseconds.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(name: str, value: Any) -> str | None:
    """Return an error message for ``value`` as knob ``name``, or None when it is valid."""
    knob = KNOB_BY_NAME[name]
    kind = knob.kind
    if kind == FLAG:
        if isinstance(value, bool):
            return None
        return f"{name} must be true or false, got {_show(value)}"
    if kind == FLAG_OR_RATE:
        if isinstance(value, bool):
            return None
        if _is_number(value) and math.isfinite(value) and 0 <= value <= 1:
            return None
        return f"{name} must be true, false or a rate between 0 and 1, got {_show(value)}"
    if kind == CHOICE:
        if isinstance(value, (str, int)) and not isinstance(value, bool) \
                and str(value) in knob.choices:
            return None  # 429 and "429" alike: YAML reads a bare 429 as a number
        return f"{name} must be one of {', '.join(knob.choices)}, got {_show(value)}"
    if kind == COUNT:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
            return None
        return f"{name} must be a whole number from 0 to {MAX_COUNT}, got {_show(value)}"
    if kind == STATUS:
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return None
        return f"{name} must be an integer HTTP status between 400 and 599, got {_show(value)}"
    # numeric kinds
    unit = {MS: "of milliseconds (e.g. 200)", SECONDS: "of seconds (e.g. 5)",
            RATE: "between 0 and 1 (e.g. 0.1)"}[kind]
    if not _is_number(value):
        return f"{name} must be a number {unit}, got {_show(value)}"
    if not math.isfinite(value):
        return f"{name} must be a finite number, got {_show(value)}"
    if kind == RATE:
        if not 0 <= value <= 1:
            return f"{name} must be between 0 and 1, got {_show(value)}"
        return None
    if value < 0:
        return f"{name} must be >= 0, got {_show(value)}"
    limit = MAX_MS if kind == MS else MAX_SECONDS
    if value > limit:
        return f"{name} must be <= {limit}, got {_show(value)}"
    return None


def validate_patch(patch: Any) -> dict[str, Any]:
    """Check a whole partial update; return it, or raise FaultError listing every problem."""
    if not isinstance(patch, dict):
        raise FaultError([
            f"faults must be a JSON object like {{\"latency_ms\": 200}}, got {type(patch).__name__}"
        ])
    errors = []
    for name, value in patch.items():
        if name not in KNOB_BY_NAME:
            errors.append(_unknown(name))
            continue
        problem = check_value(name, value)
        if problem:
            errors.append(problem)
    if errors:
        raise FaultError(errors)
    return {name: str(value) if KNOB_BY_NAME[name].kind == CHOICE else value
            for name, value in patch.items()}


def _unknown(name: Any) -> str:
    import difflib  # error path only

    close = difflib.get_close_matches(str(name), KNOB_BY_NAME, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown fault {str(name)!r}{hint} - known faults: {', '.join(KNOB_BY_NAME)}"


def rate_of(value: bool | float) -> float:
    if value is True:
        return 1.0
    if value is False:
        return 0.0
    return float(value)


def _happens(rate: float, rng) -> bool:
    """Draw only for rates strictly between 0 and 1, so sequences stay reproducible."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    return rng.random() < rate


@dataclass(slots=True)
class AppDecision:
    """What to do to one app request. Checked by the app in field order."""

    warming_up: float = 0.0      # seconds of warm-up left (> 0 means answer 503)
    reset: bool = False
    hang: bool = False
    delay_s: float = 0.0
    cpu_ms: float = 0.0
    dependency_down: bool = False
    error_status: int | None = None
    crash: bool = False


@dataclass(slots=True)
class HealthDecision:
    warming_up: float = 0.0
    delay_s: float = 0.0
    fail: bool = False
    dependency_down: bool = False


class FaultState:
    """Current fault settings plus the end of the running warm-up, if any."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.settings: dict[str, Any] = dict(DEFAULTS)
        self.warmup_until = 0.0
        self._app_quiet = True
        self._live_quiet = True

    # -- changes -----------------------------------------------------------------------

    def apply(self, patch: Any) -> dict[str, Any]:
        """Validate then apply a partial update; return the knobs it changed."""
        patch = validate_patch(patch)
        self.settings.update(patch)
        if "warmup_s" in patch:
            # Setting warmup_s (re)starts the warm-up now; 0 ends it.
            self.warmup_until = self.clock() + patch["warmup_s"] if patch["warmup_s"] > 0 else 0.0
        self._recompute()
        return dict(patch)

    def clear(self) -> None:
        self.settings = dict(DEFAULTS)
        self.warmup_until = 0.0
        self._recompute()

    def _recompute(self) -> None:
        s = self.settings
        self._app_quiet = all(not s[k] for k in _APP_KNOBS)
        self._live_quiet = all(not s[k] for k in _LIVE_KNOBS)

    # -- views -------------------------------------------------------------------------

    def warmup_remaining(self, now: float | None = None) -> float:
        if not self.warmup_until:
            return 0.0
        now = self.clock() if now is None else now
        return max(0.0, self.warmup_until - now)

    def app_quiet(self, now: float) -> bool:
        """True when no knob touches app requests right now (the server's fast path)."""
        return self._app_quiet and now >= self.warmup_until

    def live_quiet(self) -> bool:
        return self._live_quiet

    def snapshot(self) -> dict[str, Any]:
        return dict(self.settings)

    # -- decisions ---------------------------------------------------------------------

    def decide_app(self, now: float, rng) -> AppDecision:
        s = self.settings
        d = AppDecision()
        if now < self.warmup_until:
            d.warming_up = self.warmup_until - now
            return d
        # Random draws happen in a fixed order: jitter, reset, error, crash.
        delay_ms = s["latency_ms"]
        if s["jitter_ms"]:
            delay_ms += rng.uniform(0, s["jitter_ms"])
        d.delay_s = delay_ms / 1000.0
        if _happens(rate_of(s["reset"]), rng):
            d.reset = True
            return d
        if s["hang"]:
            d.hang = True
            return d
        d.cpu_ms = s["cpu_ms"]
        if s["dependency_down"]:
            d.dependency_down = True
            return d
        if _happens(s["error_rate"], rng):
            d.error_status = s["error_status"]
            return d
        d.crash = _happens(rate_of(s["crash_mid_response"]), rng)
        return d

    def decide_overload(self, in_flight: int) -> tuple[str, int] | None:
        """Shed this app request? ("reset", 0) or ("status", code with Retry-After), or
        None: ``in_flight`` app requests are already being worked on."""
        s = self.settings
        limit = s["max_in_flight"]
        if not limit or in_flight < limit:
            return None
        if s["shed"] == "reset":
            return ("reset", 0)
        return ("status", int(s["shed"]))

    def decide_ready(self, now: float, cached: bool = False) -> HealthDecision:
        s = self.settings
        d = HealthDecision()
        if now < self.warmup_until:
            d.warming_up = self.warmup_until - now
            return d
        d.delay_s = 0.0 if cached else s["health_latency_ms"] / 1000.0
        d.fail = s["health_fail"]
        d.dependency_down = s["dependency_down"]
        return d

    def decide_live(self) -> HealthDecision:
        s = self.settings
        return HealthDecision(delay_s=s["live_latency_ms"] / 1000.0, fail=s["live_fail"])
