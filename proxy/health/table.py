"""The backend lifecycle as tables: every transition, its trigger, and why.

Theory of operation
-------------------
A backend carries three independent state machines (HAProxy keeps observed
health apart from admin intent the same way, Envoy keeps active-check and
outlier flags apart):

* **health** (observed by active checks): initial -> healthy | unhealthy.
  Consecutive probe results are counted; a run of `healthy_threshold` passes
  or `unhealthy_threshold` failures moves the state. A pass resets the failure
  run and a failure resets the pass run.
* **ejection** (observed by passive health, outlier detection): included ->
  ejected when real traffic trips a detector, ejected -> included when the
  ejection time has elapsed.
* **intent** (decided by an operator): active, draining, maintenance; a drain
  that was a removal ends with the backend removed from its pool.

A backend is eligible for new work only when intent is active, health is not
unhealthy (nor initial while active checks are configured) and it is not
ejected (see proxy.model).

`TABLE` is the single source: the checkers use `apply_probe` (a pure
function over `Counters`), the outlier detector and the drain manager take
their causes from `cause()`, and the site draws `as_mermaid()`. Changing a row
here changes the behaviour and the diagram together.
"""
from __future__ import annotations

from dataclasses import dataclass

# Machines and their states (values match proxy.model.Health / Intent).
HEALTH = "health"
EJECTION = "ejection"
INTENT = "intent"

INITIAL, HEALTHY, UNHEALTHY = "initial", "healthy", "unhealthy"
INCLUDED, EJECTED = "included", "ejected"
ACTIVE, DRAINING, MAINTENANCE, REMOVED = "active", "draining", "maintenance", "removed"

STATES: dict[str, tuple[str, ...]] = {
    HEALTH: (INITIAL, HEALTHY, UNHEALTHY),
    EJECTION: (INCLUDED, EJECTED),
    INTENT: (ACTIVE, DRAINING, MAINTENANCE, REMOVED),
}
# Where each machine starts (drawn as [*] --> state).
START: dict[str, str] = {HEALTH: INITIAL, EJECTION: INCLUDED, INTENT: ACTIVE}
# States that end the machine (drawn as state --> [*]).
FINAL: frozenset[str] = frozenset({REMOVED})


@dataclass(frozen=True, slots=True)
class Transition:
    machine: str
    source: str
    event: str  # short trigger name: "passes", "failures", "trip", "drain"...
    target: str
    cause: str  # template, filled by cause(**values)
    label: str  # what the diagram writes on the arrow

    def format(self, **values) -> str:
        """Fill the template; `{s}` / `{es}` pluralise after `count` ("1 pass", "2 passes")."""
        count = values.get("count")
        values.setdefault("s", "" if count == 1 else "s")
        values.setdefault("es", "" if count == 1 else "es")
        return self.cause.format(**values)


def _t(machine, source, event, target, cause, label) -> Transition:
    return Transition(machine, source, event, target, cause, label)


TABLE: tuple[Transition, ...] = (
    # -- observed health: active checks -----------------------------------------------------
    _t(HEALTH, INITIAL, "passes", HEALTHY, "{count} consecutive pass{es}",
       "healthy_threshold passes"),
    _t(HEALTH, INITIAL, "failures", UNHEALTHY, "{count} consecutive failure{s}: {detail}",
       "unhealthy_threshold failures"),
    _t(HEALTH, HEALTHY, "failures", UNHEALTHY, "{count} consecutive failure{s}: {detail}",
       "unhealthy_threshold failures"),
    _t(HEALTH, UNHEALTHY, "passes", HEALTHY, "{count} consecutive pass{es}",
       "healthy_threshold passes"),
    # Checks switched off for the pool: nobody observes the backend any more, so
    # the honest state is "initial" again (eligible, since nothing checks it).
    _t(HEALTH, HEALTHY, "checks_removed", INITIAL, "health checks removed from pool {pool}",
       "checks removed"),
    _t(HEALTH, UNHEALTHY, "checks_removed", INITIAL, "health checks removed from pool {pool}",
       "checks removed"),
    # -- observed health: passive (outlier detection) -------------------------------------
    _t(EJECTION, INCLUDED, "consecutive_5xx", EJECTED,
       "{count} consecutive 5xx: ejected for {duration} (ejection {number})",
       "consecutive 5xx"),
    _t(EJECTION, INCLUDED, "consecutive_gateway_failure", EJECTED,
       "{count} consecutive gateway failure{s}: ejected for {duration} (ejection {number})",
       "consecutive gateway failures"),
    _t(EJECTION, INCLUDED, "failure_percentage", EJECTED,
       "{percent:.0f}% failures over {window} (min {minimum} requests): "
       "ejected for {duration} (ejection {number})",
       "failure percentage over window"),
    _t(EJECTION, EJECTED, "expired", INCLUDED, "ejection time {duration} elapsed",
       "ejection time elapsed"),
    # -- intent: operator decisions -------------------------------------------------------
    _t(INTENT, ACTIVE, "drain", DRAINING, "drain started: deregistration delay {delay}",
       "admin drain"),
    _t(INTENT, ACTIVE, "maintenance", MAINTENANCE, "admin maintenance", "admin maintenance"),
    _t(INTENT, DRAINING, "maintenance", MAINTENANCE, "admin maintenance", "admin maintenance"),
    _t(INTENT, MAINTENANCE, "drain", DRAINING, "drain started: deregistration delay {delay}",
       "admin drain"),
    _t(INTENT, DRAINING, "activate", ACTIVE, "admin activate", "admin activate"),
    _t(INTENT, MAINTENANCE, "activate", ACTIVE, "admin activate", "admin activate"),
    _t(INTENT, DRAINING, "drain_completed", REMOVED,
       "drain completed after {elapsed}: {detail}", "drain completed (removal)"),
)

_INDEX: dict[tuple[str, str, str], Transition] = {
    (t.machine, t.source, t.event): t for t in TABLE
}


def find(machine: str, source: str, event: str) -> Transition | None:
    """The row for `event` in `source`, or None when the event changes nothing there."""
    return _INDEX.get((machine, source, event))


def cause(machine: str, source: str, event: str, **values) -> str:
    """The cause text of a transition; raises KeyError when the table has no such row."""
    row = _INDEX[(machine, source, event)]
    return row.format(**values)


def fmt_seconds(seconds: float) -> str:
    """500 ms, 2s, 1.5s: how durations read in causes."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:g}s" if seconds == int(seconds) else f"{seconds:.1f}s"


# ---------------------------------------------------------------- active checks

@dataclass(frozen=True, slots=True)
class Counters:
    """Consecutive probe results of one backend (one of the two is always 0)."""

    passes: int = 0
    fails: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """A transition that a probe result caused, with its filled-in cause."""

    row: Transition
    cause: str

    @property
    def target(self) -> str:
        return self.row.target


def apply_probe(counters: Counters, health: str, ok: bool, detail: str,
                healthy_threshold: int, unhealthy_threshold: int) -> tuple[Counters, Step | None]:
    """Count one probe result; return the new counters and the transition, if any.

    Pure: `health` is the backend's current observed health ("initial",
    "healthy", "unhealthy"; an enum whose value is one of those works too).
    Thresholds are compared with >= so counters carried over a reload that
    lowered a threshold still act on the next probe.
    """
    health = getattr(health, "value", health)
    if ok:
        counters = Counters(passes=counters.passes + 1, fails=0)
        if health != HEALTHY and counters.passes >= healthy_threshold:
            row = find(HEALTH, health, "passes")
            if row is not None:
                return counters, Step(row, row.format(count=counters.passes, detail=detail))
        return counters, None
    counters = Counters(passes=0, fails=counters.fails + 1)
    if health != UNHEALTHY and counters.fails >= unhealthy_threshold:
        row = find(HEALTH, health, "failures")
        if row is not None:
            return counters, Step(row, row.format(count=counters.fails, detail=detail))
    return counters, None


# ---------------------------------------------------------------- the diagram

def _state_id(machine: str, state: str) -> str:
    return f"{machine}_{state}"


def as_mermaid(machine: str | None = None) -> str:
    """A Mermaid stateDiagram-v2 of one machine, or of all three side by side.

    All three: each machine is a composite state, so the picture itself says
    that health, ejection and intent change independently.
    """
    machines = [machine] if machine else [HEALTH, EJECTION, INTENT]
    for m in machines:
        if m not in STATES:
            raise ValueError(f"unknown machine {m!r}; choose one of {', '.join(STATES)}")
    titles = {HEALTH: "Observed health (active checks)",
              EJECTION: "Outlier ejection (passive health)",
              INTENT: "Intent (operator)"}
    lines = ["stateDiagram-v2"]
    single = machine is not None
    for m in machines:
        indent = "    " if single else "        "
        if not single:
            lines.append(f'    state "{titles[m]}" as {m} {{')
        for state in STATES[m]:
            if state in FINAL:
                continue
            lines.append(f'{indent}state "{state}" as {_state_id(m, state)}')
        lines.append(f"{indent}[*] --> {_state_id(m, START[m])}")
        for row in TABLE:
            if row.machine != m:
                continue
            target = "[*]" if row.target in FINAL else _state_id(m, row.target)
            lines.append(f"{indent}{_state_id(m, row.source)} --> {target} : {row.label}")
        if not single:
            lines.append("    }")
    return "\n".join(lines) + "\n"


def rows(machine: str | None = None) -> list[dict]:
    """The table as plain data (for GET /state or the site's explainer)."""
    return [
        {"machine": t.machine, "from": t.source, "event": t.event, "to": t.target,
         "cause": t.cause, "label": t.label}
        for t in TABLE if machine is None or t.machine == machine
    ]
