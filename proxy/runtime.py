"""The live state built from a Config: pools, their backends and balancers.

No I/O here. The data plane asks a pool to `choose` a backend for a request;
the admin API changes things only through `Runtime.apply` (a whole new
Config, validated exactly like a file) or the verbs built on it, so a change
from the API is refused or accepted by the same rules as the YAML, whole.

Backend state (counters, health, drain) survives a reload when the backend
keeps its pool, name and address; requests in flight keep the objects they
started with, so they finish on the config they began under.
"""
from __future__ import annotations

import copy
import random
import time
from typing import Callable

from proxy import balancers
from proxy.balancers.base import PickContext
from proxy.config import (
    BackendConfig,
    Config,
    ConfigError,
    ListenerConfig,
    PoolConfig,
    parse_config,
    to_data,
)
from proxy.events import AdminChange, EventBus, PoolEvent, StateChange, encode_json
from proxy.model import BackendState, Health, Intent
from proxy.queueing import WaitQueue, backend_full
from proxy.retrybudget import RetryBudget
from proxy.zones import zone_filter

Clock = Callable[[], float]
_ACTIVE, _UNHEALTHY, _INITIAL = Intent.ACTIVE, Health.UNHEALTHY, Health.INITIAL


class Choice:
    """The outcome of choosing a backend, with everything an event needs to say why.

    `candidates` (each backend's state at decision time, as dicts) is read only
    when an event is: the pick keeps the raw values of every backend, one
    backend's `candidate_values` after the other in one flat tuple (`snapshot`),
    and the dicts are built from it on first read, once.
    """

    __slots__ = ("backend", "algorithm", "_candidates", "snapshot", "inputs", "sticky",
                 "set_cookie", "panic", "reason", "backup", "zone")

    def __init__(self, backend: BackendState | None, algorithm: str,
                 candidates: list | None = None, inputs: dict | None = None,
                 sticky: dict | None = None, set_cookie: str | None = None,
                 panic: bool = False, reason: str = "", backup: dict | None = None,
                 zone: dict | None = None, snapshot: tuple | None = None):
        self.backend = backend
        self.algorithm = algorithm
        self._candidates = candidates
        # candidate_values(b, ok) + ... (flat) when candidates is None
        self.snapshot = snapshot if candidates is None else None
        self.inputs = {} if inputs is None else inputs
        self.sticky = sticky
        self.set_cookie = set_cookie  # header value the data plane adds to the response
        self.panic = panic
        self.reason = reason  # why there is no backend (503 text)
        # Pools with backup backends: were they in this pick, and why (see _apply_backup).
        self.backup = backup
        # A listener with a zone: which zones the pick was among, and why (proxy/zones.py).
        self.zone = zone

    @property
    def candidates(self) -> list:
        got = self._candidates
        if got is None:
            snapshot = self.snapshot or ()
            got = self._candidates = [_view(*snapshot[i:i + _WIDTH])
                                      for i in range(0, len(snapshot), _WIDTH)]
        return got

    @candidates.setter
    def candidates(self, value: list) -> None:
        self._candidates = value
        self.snapshot = None  # candidates_json may no longer build from it

    def candidates_json(self) -> str | None:
        """`candidates` in JSON, from the snapshot (None when set otherwise).

        Each candidate's text is kept by its values: a pool's backends go
        through a handful of states, so a full event's candidates are joined
        from texts already made instead of encoded again (the dearest part of
        a request event's JSON)."""
        snapshot = self.snapshot
        if snapshot is None:
            return None
        texts = _CANDIDATE_JSON
        parts = []
        for i in range(0, len(snapshot), _WIDTH):
            values = snapshot[i:i + _WIDTH]
            text = texts.get(values)
            if text is None:
                if len(texts) >= _CANDIDATE_JSON_MAX:
                    texts.clear()
                text = texts[values] = encode_json(_view(*values))
            parts.append(text)
        return "[" + ",".join(parts) + "]"

    def __repr__(self) -> str:
        name = self.backend.name if self.backend is not None else None
        return f"<Choice {self.algorithm} -> {name}>"


# candidate values -> that candidate's JSON text (Choice.candidates_json). The values'
# types are fixed by where they come from (eligible and backup are bools, weight and
# the counts ints), so equal keys (1 == True) never stand for different texts.
_CANDIDATE_JSON: dict[tuple, str] = {}
_CANDIDATE_JSON_MAX = 4096
_WIDTH = 9  # values per candidate (candidate_values)


def candidate_values(b: BackendState, eligible: bool) -> tuple:
    """One candidate's state at decision time, raw (cheap); `_view` makes the dict."""
    return (b.name, b.health.value, b.intent.value, eligible, b.weight, b.outstanding,
            b.active_connections, b.backup, b.zone)


def _view(name, health, intent, eligible, weight, outstanding, connections, backup,
          zone) -> dict:
    return {"name": name, "health": health, "intent": intent,
            "eligible": eligible, "weight": weight, "outstanding": outstanding,
            "connections": connections, "backup": backup, "zone": zone}


def candidate_view(backend: BackendState, now: float, eligible: bool | None = None) -> dict:
    """A compact snapshot of one candidate at decision time."""
    return _view(*candidate_values(
        backend, backend.is_eligible(now) if eligible is None else eligible))


class PoolRuntime:
    def __init__(self, name: str, config: PoolConfig, bus: EventBus, clock: Clock,
                 rng: random.Random, previous: "PoolRuntime | None" = None,
                 cause: str = "config applied"):
        self.name = name
        self.config = config
        self.bus = bus
        self.clock = clock
        self.rng = rng
        self.backends: dict[str, BackendState] = {}
        old = previous.backends if previous else {}
        for bc in config.backends:
            self.backends[bc.name] = self._carry_over(bc, old.get(bc.name), cause)
        if previous is not None and previous.config.balancer == config.balancer:
            # Same algorithm and knobs: keep its state (round-robin index,
            # smooth-WRR current weights) so a weight change or an added
            # backend does not restart the cycle.
            self.balancer = previous.balancer
            self.balancer.rebuild(list(self.backends.values()))
        else:
            # A seeded pool draws from a generator of its own: the same picks for the same
            # arrivals whatever the rest of the proxy draws (route splits, jitter).
            own = random.Random(config.balancer.seed) if config.balancer.seed is not None \
                else rng
            self.balancer = balancers.create(config.balancer, list(self.backends.values()),
                                             rng=own, clock=clock)
        self.sticky = None
        if config.sticky is not None:
            from proxy import sticky

            keep = previous.sticky if previous and previous.config.sticky == config.sticky else None
            self.sticky = keep or sticky.create(config.sticky, name, clock=clock, rng=rng)
        self.in_panic = previous.in_panic if previous else False
        # Backends at their connection limit are skipped; requests then wait in
        # the queue (kept across reloads: its waiters are live requests).
        self.has_backups = any(b.backup for b in self.backends.values())
        self.backup_active = previous.backup_active if previous else False
        self.limited = (config.max_requests is not None
                        or any(b.max_connections is not None for b in self.backends.values()))
        self.queue = previous.queue if previous is not None else WaitQueue()
        self.retry_budget = previous.retry_budget if previous is not None else RetryBudget()
        # Hooks for passive health (outlier detection) and the health checker.
        self.outlier = None
        self.extra: dict = {}

    def _carry_over(self, bc: BackendConfig, old: BackendState | None,
                    cause: str) -> BackendState:
        host, port = bc.address
        if old is not None and (old.host, old.port) == (host, port):
            state = old
            state.weight = bc.weight
        else:
            state = BackendState(name=bc.name, host=host, port=port, pool=self.name,
                                 weight=bc.weight)
            # Without active checks nothing will ever move it out of "initial";
            # it is eligible there (initial is not unhealthy).
        state.slow_start = self.config.slow_start
        state.max_connections = self.config.backend_limit(bc)
        state.backup = bc.backup
        state.zone = bc.zone
        state.ewma_decay = self.config.balancer.decay_time
        if state is old:
            self.set_intent(state, Intent(bc.state), cause)
        else:
            state.intent = Intent(bc.state)
        return state

    # ------------------------------------------------------------ choosing

    def report_load(self, loads: dict[str, float], now: float) -> list[str]:
        """Take a load report (backend -> requests in flight across every balancer) for
        balancer.load: reported; returns the names it named that this pool lacks."""
        unknown = [name for name in loads if name not in self.backends]
        for name, load in loads.items():
            if name in self.backends:
                self.backends[name].reported_load = load
                self.backends[name].reported_at = now
        return unknown

    def full_backends(self) -> set | None:
        """The backends at their connection limit now (None when no backend has one);
        all of them while the pool is at its max_requests."""
        if not self.limited:
            return None
        cap = self.config.max_requests
        if cap is not None and self.in_flight() >= cap:
            return set(self.backends.values()) or None
        return {b for b in self.backends.values() if backend_full(b, b.max_connections)} or None

    def in_flight(self) -> int:
        """Requests in flight to the pool's backends (what max_requests caps)."""
        return sum(b.outstanding for b in self.backends.values())

    def limits_text(self, full=None) -> str:
        """What is at its limit, for a 503's reason: `b1 2/2, b2 1/1`, and the pool's
        `max_requests 3/3` while that binds."""
        backends = full if full is not None else [
            b for b in self.backends.values() if b.max_connections is not None]
        parts = [f"{b.name} {b.outstanding}/{b.max_connections}"
                 for b in sorted(backends, key=lambda b: b.name)
                 if b.max_connections is not None]
        cap = self.config.max_requests
        if cap is not None:
            parts.append(f"pool max_requests {self.in_flight()}/{cap}")
        return ", ".join(parts)

    def wake(self) -> object | None:
        """A backend slot was freed: the request at the head of the queue, taken out
        to pick again (see proxy/queueing.py), or None."""
        return self.queue.pop()

    def eligible(self, now: float) -> list[BackendState]:
        return [b for b in self.backends.values() if b.is_eligible(now)]

    def choose(self, ctx: PickContext, exclude=None) -> Choice:
        """Pick a backend for one request.

        `exclude` (a set of BackendState) is left out of this pick: the data
        plane passes the backends that already failed this request (retries go
        elsewhere) and those at max_connections_per_backend.
        """
        now = ctx.now
        all_backends = list(self.backends.values())
        # BackendState.is_eligible inlined (this runs for every request): the
        # raw candidate values are kept; their dicts are built if an event is read.
        # (`_value_` is the enum member's plain value: `.value` is a slow property,
        # and plain strings keep the tuple out of the cyclic GC's work.) One flat
        # tuple, not one per backend: a request's event keeps it for as long as the
        # request store keeps the event, and every byte kept is a byte the next
        # requests allocate from memory gone cold.
        values = []
        eligible = []
        for b in all_backends:
            health = b.health
            intent = b.intent
            ok = (intent is _ACTIVE and health is not _UNHEALTHY
                  and not (health is _INITIAL and b.requires_check)
                  and b.ejected_until <= now)
            values += (b.name, health._value_, intent._value_, ok, b.weight, b.outstanding,
                       b.active_connections, b.backup, b.zone)
            if ok:
                eligible.append(b)
        choice = Choice(None, self.config.balancer.algorithm, snapshot=tuple(values))
        if len(eligible) < len(all_backends) or self.in_panic:
            eligible = self._apply_panic(eligible, all_backends, now, choice)
        if self.has_backups and not choice.panic:
            eligible = self._apply_backup(eligible, all_backends, choice)
        if ctx.zone is not None and eligible:
            eligible, choice.zone = zone_filter(eligible, ctx.zone, self.config.cross_zone)
        if exclude and eligible:
            remaining = [b for b in eligible if b not in exclude]
            if not remaining:
                # The pool has eligible backends; this request may not use them.
                choice.reason = (f"every eligible backend of pool {self.name} is excluded "
                                 f"for this request ({', '.join(b.name for b in eligible)}: "
                                 "failed already or at max_connections_per_backend)")
                return choice
            eligible = remaining
        if self.sticky is not None:
            target, why = self.sticky.find(ctx, self.backends)
            if target is not None and exclude and target in exclude:
                why = f"sticky target {target.name} failed on this request: re-picked"
                target = None
            if target is not None and target in eligible:
                choice.backend = target
                choice.sticky = {"mode": self.sticky.mode, "hit": True,
                                 "target": target.name, "reason": why}
                return choice
            if target is not None:
                why = (f"sticky target {target.name} is {_unavailable(target, now)}: "
                       "re-picked and re-stuck")
            choice.sticky = {"mode": self.sticky.mode, "hit": False,
                             "target": target.name if target else None, "reason": why}
        decision = self.balancer.pick(ctx, eligible) if eligible else None
        if decision is None:
            choice.reason = self._no_backend_reason(all_backends, now)
            self.bus.publish(PoolEvent(pool=self.name, what="no_eligible",
                                       eligible=0, total=len(all_backends),
                                       detail=choice.reason))
            return choice
        choice.backend = decision.backend
        choice.inputs = decision.inputs
        if self.sticky is not None:
            choice.set_cookie = self.sticky.stick(ctx, decision.backend)
            note = self.sticky.stick_note(ctx, decision.backend)
            if note and choice.sticky is not None:
                choice.sticky["stored"] = note
        return choice

    def _apply_backup(self, eligible, all_backends, choice):
        """Primaries first (HAProxy `backup`, Envoy priorities): backups join the
        pick only while the share of eligible primaries is below backup_threshold
        (0: only when no primary is eligible). The choice says which and why."""
        primaries = [b for b in eligible if not b.backup]
        serving = sum(1 for b in all_backends if not b.backup and b.intent is Intent.ACTIVE)
        use, why = backup_decision(len(primaries), serving, self.config.backup_threshold)
        choice.backup = {"used": use, "eligible_primaries": len(primaries),
                         "primaries": serving,
                         "threshold": self.config.backup_threshold, "reason": why}
        self._set_backup(use, why)
        return eligible if use else primaries

    def _set_backup(self, active: bool, why: str) -> None:
        if active != self.backup_active:
            self.backup_active = active
            self.bus.publish(PoolEvent(
                pool=self.name, what="backup_on" if active else "backup_off",
                eligible=sum(1 for b in self.backends.values()
                             if not b.backup and b.is_eligible(self.clock())),
                total=sum(1 for b in self.backends.values() if not b.backup),
                detail=why))

    def refresh_backup(self, now: float) -> None:
        """Recompute whether backups serve from the backends now (for /state and the
        backup_on / backup_off events), as refresh_panic does for panic."""
        if not self.has_backups:
            return
        backends = self.backends.values()
        primaries = sum(1 for b in backends if not b.backup and b.is_eligible(now))
        serving = sum(1 for b in backends if not b.backup and b.intent is Intent.ACTIVE)
        self._set_backup(*backup_decision(primaries, serving, self.config.backup_threshold))

    def _apply_panic(self, eligible, all_backends, now, choice):
        """Fail open (Envoy's panic threshold, ALB's fail-open) when too few are eligible."""
        serving = [b for b in all_backends if b.intent is Intent.ACTIVE]
        if self._set_panic(len(eligible), len(serving)):
            choice.panic = True
            return serving
        return eligible

    def refresh_panic(self, now: float | None = None) -> bool:
        """Recompute the panic flag from the backends' state now.

        Called on every change that can move it (health, intent, ejection,
        config), so /state and the metric follow the pool, not the next request.
        """
        now = self.clock() if now is None else now
        self.refresh_backup(now)
        backends = list(self.backends.values())
        serving = sum(1 for b in backends if b.intent is Intent.ACTIVE)
        # The same changes can end a wait in the queue (proxy/queueing.py).
        self.queue.kick()
        return self._set_panic(sum(1 for b in backends if b.is_eligible(now)), serving)

    def _set_panic(self, eligible: int, serving: int) -> bool:
        threshold = self.config.panic_threshold
        panic = bool(threshold > 0 and serving and eligible < threshold * serving)
        if panic != self.in_panic:
            self.in_panic = panic
            self.bus.publish(PoolEvent(
                pool=self.name, what="panic_on" if panic else "panic_off",
                eligible=eligible, total=serving,
                detail=(f"{eligible}/{serving} eligible is below "
                        f"{threshold:.0%}: spreading over all active backends")
                if panic else "enough backends eligible again"))
        return panic

    def _no_backend_reason(self, all_backends, now) -> str:
        if not all_backends:
            return f"pool {self.name} has no backends"
        states = ", ".join(f"{b.name} {_unavailable(b, now)}" for b in all_backends)
        return f"no eligible backend in pool {self.name} ({states})"

    # ------------------------------------------------------------ lifecycle

    def set_health(self, backend: BackendState, health: Health, cause: str) -> None:
        if backend.health is health:
            backend.health_reason = cause
            return
        old = backend.health
        backend.health = health
        backend.health_reason = cause
        if health is Health.HEALTHY:
            backend.healthy_since = self.clock()
        self.bus.publish(StateChange(pool=self.name, backend=backend.name, kind="health",
                                     old=old.value, new=health.value, cause=cause))
        self.refresh_panic()

    def set_intent(self, backend: BackendState, intent: Intent, cause: str) -> None:
        if backend.intent is intent:
            return
        old = backend.intent
        backend.intent = intent
        self.bus.publish(StateChange(pool=self.name, backend=backend.name, kind="intent",
                                     old=old.value, new=intent.value, cause=cause))
        if self.backends.get(backend.name) is backend:  # not while the pool is being built
            self.refresh_panic()

    def state(self, now: float) -> dict:
        return {
            "name": self.name,
            "algorithm": self.config.balancer.algorithm,
            "balancer": self.config.balancer.model_dump(mode="json"),
            "sticky": self.config.sticky.model_dump(mode="json") if self.config.sticky else None,
            "health_check": self.config.health.model_dump(mode="json") if self.config.health else None,
            "panic": self.in_panic,
            "max_connections_per_backend": self.config.max_connections_per_backend,
            "max_requests": self.config.max_requests,
            "in_flight": self.in_flight(),
            "retry_budget": self.retry_budget.snapshot(
                self.config.retry_budget.percent if self.config.retry_budget else None,
                self.config.retry_budget.min_concurrent if self.config.retry_budget else None),
            "cross_zone": self.config.cross_zone,
            "backup_threshold": self.config.backup_threshold,
            "backup_active": self.backup_active,
            "queue": self.queue.snapshot(
                self.config.queue.max_length if self.config.queue else None,
                self.config.queue.timeout if self.config.queue else None),
            "backends": [b.snapshot(now) for b in self.backends.values()],
        }


def backup_decision(eligible_primaries: int, primaries: int,
                    threshold: float) -> tuple[bool, str]:
    """Whether a pool's backups join the pick, and why (pure: the rule itself)."""
    if primaries == 0:
        return True, ("no primary backend is in service (each is draining or in "
                      "maintenance): the backups serve")
    if eligible_primaries == 0:
        return True, (f"no primary backend is eligible (0/{primaries}): the backups serve")
    if eligible_primaries < threshold * primaries:
        return True, (f"{eligible_primaries}/{primaries} primaries eligible is below "
                      f"backup_threshold {threshold:.0%}: the backups join them")
    if threshold > 0:
        return False, (f"{eligible_primaries}/{primaries} primaries eligible, at or above "
                       f"backup_threshold {threshold:.0%}: the backups stand by")
    return False, (f"{eligible_primaries}/{primaries} primaries eligible: the backups stand "
                   "by until none is")


def _unavailable(backend: BackendState, now: float) -> str:
    if backend.intent is not Intent.ACTIVE:
        return backend.intent.value
    if backend.health is Health.UNHEALTHY:
        return "unhealthy"
    if backend.ejected_until > now:
        return "ejected"
    if backend.health is Health.INITIAL and backend.requires_check:
        return "not checked yet"
    return "eligible"


class Runtime:
    """Everything the data plane and the admin API share."""

    def __init__(self, config: Config, bus: EventBus | None = None,
                 clock: Clock = time.monotonic, rng: random.Random | None = None):
        self.bus = bus or EventBus(history=config.admin.request_history)
        self.clock = clock
        self.rng = rng or random.Random()
        self.config = config
        self.pools: dict[str, PoolRuntime] = {}
        self.generation = 0
        # Called after every successful apply (the server re-binds listeners,
        # restarts health checkers...). Each gets (old_config, new_config).
        self.on_apply: list[Callable[[Config, Config], None]] = []
        # Called before a config is swapped in, with (old_config, new_config);
        # may raise ConfigError to refuse it whole (the server opens new
        # listener sockets here, so a bind that fails refuses the change).
        self.before_apply: list[Callable[[Config, Config], None]] = []
        self._build(config)

    def _build(self, config: Config, cause: str = "config applied") -> None:
        pools = {name: PoolRuntime(name, pc, self.bus, self.clock, self.rng,
                                   previous=self.pools.get(name), cause=cause)
                 for name, pc in config.pools.items()}
        for name, gone in self.pools.items():
            if name not in pools:
                gone.queue.kick()  # its waiters learn the pool is gone (503)
        self.pools = pools
        self.config = config
        self.generation += 1

    @property
    def listeners(self) -> dict[str, ListenerConfig]:
        return self.config.listeners

    # ------------------------------------------------------------ changes

    def apply(self, config: Config, verb: str = "put_config", target: str = "config",
              detail: dict | None = None) -> None:
        """Swap to a validated config; listeners are told through on_apply."""
        old = self.config
        for check in self.before_apply:
            check(old, config)
        self._build(config, cause=f"{verb} {target}")
        for hook in self.on_apply:
            hook(old, config)
        self.bus.publish(AdminChange(verb=verb, target=target, detail=detail or {}))
        self.refresh_panic()

    def refresh_panic(self) -> None:
        """Every pool's panic flag from its backends now (see PoolRuntime.refresh_panic)."""
        now = self.clock()
        for pool in self.pools.values():
            pool.refresh_panic(now)

    def apply_data(self, data: dict, verb: str, target: str, detail: dict | None = None) -> Config:
        """Validate plain data as a whole config and apply it, or raise ConfigError."""
        config = parse_config(data)
        self.apply(config, verb=verb, target=target, detail=detail)
        return config

    def _edit(self) -> dict:
        return copy.deepcopy(to_data(self.config))

    def _pool_data(self, data: dict, pool: str) -> dict:
        if pool not in data["pools"]:
            raise ConfigError([(f"pools.{pool}", f"no pool named {pool!r}")])
        return data["pools"][pool]

    def _backend_index(self, pool_data: dict, pool: str, name: str) -> int:
        for i, b in enumerate(pool_data["backends"]):
            if b["name"] == name:
                return i
        raise ConfigError([(f"pools.{pool}.backends", f"no backend named {name!r}")])

    # Each verb is a plan (an edit of a copy of the running config, and how the
    # AdminChange event names it) and the same whole-config apply. The admin
    # API validates the planned config in a worker thread (proxy.control.change)
    # and applies it on the loop; these methods do both at once.

    def plan(self, verb: str, *args) -> tuple[dict, tuple[str, str, dict]]:
        """(edited copy of the config data, (event verb, target, detail)) for `verb`."""
        data = self._edit()
        return data, getattr(self, f"_plan_{verb}")(data, *args)

    def _change(self, verb: str, *args) -> None:
        data, (event, target, detail) = self.plan(verb, *args)
        self.apply_data(data, event, target, detail)

    def _plan_add_backend(self, data: dict, pool: str, backend: dict):
        self._pool_data(data, pool)["backends"].append(backend)
        return "add_backend", f"{pool}/{backend.get('name')}", dict(backend)

    def _plan_remove_backend(self, data: dict, pool: str, name: str):
        pool_data = self._pool_data(data, pool)
        del pool_data["backends"][self._backend_index(pool_data, pool, name)]
        return "remove_backend", f"{pool}/{name}", {}

    def _plan_set_weight(self, data: dict, pool: str, name: str, weight: object):
        pool_data = self._pool_data(data, pool)
        pool_data["backends"][self._backend_index(pool_data, pool, name)]["weight"] = weight
        return "set_weight", f"{pool}/{name}", {"weight": weight}

    def _plan_set_balancer(self, data: dict, pool: str, balancer: dict):
        self._pool_data(data, pool)["balancer"] = balancer
        return "set_algorithm", pool, dict(balancer)

    def _plan_set_pool_settings(self, data: dict, pool: str, settings: dict):
        pool_data = self._pool_data(data, pool)
        for key, value in settings.items():
            if key in ("backends",):
                raise ConfigError([(f"pools.{pool}.{key}", "use the backend verbs to change backends")])
            pool_data[key] = value
        return "set_pool", pool, dict(settings)

    def _plan_set_backend_state(self, data: dict, pool: str, name: str, state: str):
        pool_data = self._pool_data(data, pool)
        index = self._backend_index(pool_data, pool, name)
        pool_data["backends"][index]["state"] = state
        return "set_state", f"{pool}/{name}", {"state": state}

    def add_backend(self, pool: str, backend: dict) -> None:
        self._change("add_backend", pool, backend)

    def remove_backend(self, pool: str, name: str) -> None:
        self._change("remove_backend", pool, name)

    def set_weight(self, pool: str, name: str, weight: object) -> None:
        self._change("set_weight", pool, name, weight)

    def set_balancer(self, pool: str, balancer: dict) -> None:
        """Change a pool's algorithm (and its knobs): {"algorithm": "maglev", ...}."""
        self._change("set_balancer", pool, balancer)

    def set_pool_settings(self, pool: str, settings: dict) -> None:
        """Replace top-level pool settings (health, outlier, slow_start, timeouts...)."""
        self._change("set_pool_settings", pool, settings)

    def set_backend_state(self, pool: str, name: str, state: str) -> None:
        """active | draining | maintenance, recorded in the config so it survives reloads."""
        self._change("set_backend_state", pool, name, state)

    # ------------------------------------------------------------ views

    def backend(self, pool: str, name: str) -> BackendState:
        try:
            return self.pools[pool].backends[name]
        except KeyError:
            raise ConfigError([(f"pools.{pool}", f"no backend {name!r} in pool {pool!r}")]) from None

    def state(self) -> dict:
        now = self.clock()
        return {
            "generation": self.generation,
            "listeners": {
                name: {"bind": f"{l.bind[0]}:{l.bind[1]}", "protocol": l.protocol,
                       "routes": list(l.routes), "pool": l.pool, "zone": l.zone}
                for name, l in self.config.listeners.items()
            },
            "routes": {name: r.model_dump(mode="json", exclude_none=True)
                       for name, r in self.config.routes.items()},
            "pools": {name: p.state(now) for name, p in self.pools.items()},
        }
