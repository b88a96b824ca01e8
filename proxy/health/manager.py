"""HealthManager: runs active checks and passive outlier detection for every pool.

Theory of operation
-------------------
The manager keeps one `BackendChecker` per backend of each pool that has
a `health` section, and one `OutlierDetector` per pool that has an `outlier`
section, fed by a single bus sink. It re-syncs on every `Runtime.apply`
(`on_apply` hook, synchronous, so no request is routed in between):

* a backend the manager has not seen before (new name, or same name at a new
  address: a new BackendState) gets a fresh checker that waits `grace`;
* a backend that kept its state object keeps its counters; its checker is
  restarted only when the pool's health settings changed;
* a pool that lost its `health` section: checkers stop and its backends go
  back to "initial" (nothing observes them any more, so they are eligible);
* a pool that lost its `outlier` section: ejected backends return at once.

All checkers share one `Scheduler` (proxy.health.scheduler): one loop timer
for every probe and every probe timeout, instead of a task per backend.

Startup counts as "just met": backends present when the proxy starts also
wait `grace` before their first probe (the proxy cannot tell a backend that
has run for hours from one booting now).

Health moves only through `PoolRuntime.set_health`, which publishes the
StateChange and stamps `healthy_since` (slow start ramps from there). A
backend added later to a pool *without* active checks would otherwise never
get `healthy_since`, so the manager stamps it when it first sees it: it ramps
too. Backends present at startup are not ramped (they all start together, so
ramping them would change nothing but the absolute numbers).

`requires_check` on a BackendState tells the model that "initial" is not
eligible yet (proxy.model). The manager sets it for every backend of a
checked pool at startup and for every backend that joins one later (as an
ALB target: registered, then "initial" until it passes healthy_threshold
checks). It does *not* set it on backends already serving when checks are
switched on for their pool: taking the whole pool out of service until the
first checks pass would be an outage made by a settings change; they keep
serving in "initial" until their checks give a verdict either way.
"""
from __future__ import annotations

import asyncio
import logging
import random

from proxy.events import Event, RequestEvent
from proxy.health.active import BackendChecker, Prober, check_speaks_tls
from proxy.health.passive import OutlierDetector
from proxy.health.scheduler import Scheduler
from proxy.health.table import HEALTH, cause as table_cause
from proxy.model import BackendState, Health

log = logging.getLogger("proxy.health")


class HealthManager:
    def __init__(self, server, rng: random.Random | None = None,
                 probers: dict[str, Prober] | None = None):
        self.server = server
        self.runtime = server.runtime
        self.bus = server.bus
        self.clock = self.runtime.clock
        # Jitter draws from its own generator, seeded from the runtime's: still
        # deterministic, and the balancers' random sequences are not disturbed.
        self.rng = rng or random.Random(self.runtime.rng.getrandbits(64))
        self.probers = probers or {}
        self.checkers: dict[tuple[str, str], BackendChecker] = {}
        self.detectors: dict[str, OutlierDetector] = {}
        # The BackendStates of the last sync (objects, not ids: an id can be
        # reused once a removed backend is freed). A state not in here is new.
        self._known: set[BackendState] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self.scheduler: Scheduler | None = None  # every checker's timers (made at start)
        self.started = False
        self._sink_on = False  # _sink is on the bus (see _follow_detectors)
        self.runtime.on_apply.append(self._on_apply)
        self._sync(startup=True)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        self.scheduler = Scheduler(asyncio.get_running_loop())
        self._follow_detectors()
        if self._on_apply not in self.runtime.on_apply:  # started again after stop()
            self.runtime.on_apply.append(self._on_apply)
            self._sync(startup=False)
        for checker in self.checkers.values():
            if not checker.running:
                checker.start(self.scheduler)

    async def stop(self) -> None:
        self.started = False
        self._follow_detectors()
        if self._on_apply in self.runtime.on_apply:
            self.runtime.on_apply.remove(self._on_apply)
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        await asyncio.gather(*(c.stop() for c in self.checkers.values()))
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None

    # ------------------------------------------------------------ syncing with the runtime

    def _on_apply(self, old_config, new_config) -> None:
        self._sync(startup=False)

    def _sync(self, startup: bool) -> None:
        runtime = self.runtime
        seen_keys: set[tuple[str, str]] = set()
        known_now: set[BackendState] = set()
        for pname, pool in runtime.pools.items():
            health = pool.config.health
            for name, backend in pool.backends.items():
                key = (pname, name)
                seen_keys.add(key)
                is_new = backend not in self._known
                known_now.add(backend)
                if health is None:
                    self._unchecked(pool, backend, key, is_new and not startup)
                else:
                    if is_new or startup:
                        backend.requires_check = True
                    self._checked(pname, backend, key, health,
                                  self._speaks_tls(pool.config, backend, health))
            self._sync_outlier(pname, pool)
        for key in [k for k in self.checkers if k not in seen_keys]:
            self.checkers.pop(key).cancel()
        for pname in [p for p in self.detectors if p not in runtime.pools]:
            del self.detectors[pname]
        self._known = known_now
        self._follow_detectors()
        # requires_check may have changed who is eligible: panic follows now.
        refresh = getattr(runtime, "refresh_panic", None)
        if refresh is not None:
            refresh()

    def _unchecked(self, pool, backend: BackendState, key, ramp: bool) -> None:
        checker = self.checkers.pop(key, None)
        backend.requires_check = False
        if checker is not None:
            checker.cancel()
            if checker.backend is backend and backend.health is not Health.INITIAL:
                pool.set_health(backend, Health.INITIAL,
                                table_cause(HEALTH, backend.health.value, "checks_removed",
                                            pool=pool.name))
        if ramp and backend.healthy_since is None:
            # No check will ever mark it healthy: it ramps from the moment it joins.
            backend.healthy_since = self.clock()

    @staticmethod
    def _speaks_tls(pool_config, backend: BackendState, health) -> bool:
        """Whether this backend's check speaks TLS (see active.check_speaks_tls)."""
        settings = next((pool_config.backend_tls(b) for b in pool_config.backends
                         if b.name == backend.name), None)
        return check_speaks_tls(health, backend.port, settings is not None)

    def _tls_getter(self, pname: str, name: str):
        """The backend's ClientTLS as the server holds it now (proxy.tls.build_upstream_tls)."""
        return lambda: getattr(self.server, "upstream_tls", {}).get((pname, name))

    def _checked(self, pname: str, backend: BackendState, key, health, tls: bool) -> None:
        old = self.checkers.get(key)
        if (old is not None and old.backend is backend and old.config == health
                and (old.tls_getter is not None) == tls):
            return  # unchanged: keep running
        counters, new = None, True
        if old is not None:
            old.cancel()
            if old.backend is backend:  # same backend, new settings: keep what it has shown
                counters, new = old.counters, False
        checker = BackendChecker(
            pname, backend, health, pool_getter=lambda p=pname: self.runtime.pools.get(p),
            bus=self.bus, clock=self.clock, rng=self.rng, counters=counters, new=new,
            prober=self.probers.get(health.type),
            tls_getter=self._tls_getter(pname, backend.name) if tls else None)
        if old is not None and not new:
            checker.last, checker.last_at, checker.probes = old.last, old.last_at, old.probes
        self.checkers[key] = checker
        if self.started:
            checker.start(self.scheduler)

    def _sync_outlier(self, pname: str, pool) -> None:
        config = pool.config.outlier
        detector = self.detectors.get(pname)
        if config is None:
            if detector is not None:
                detector.pool = pool
                detector.release_all(f"outlier detection removed from pool {pname}")
                del self.detectors[pname]
            return
        if detector is None:
            self.detectors[pname] = OutlierDetector(pool, config, self.bus, self.clock,
                                                    call_later=self._call_later)
        else:
            detector.update(pool, config)

    def _call_later(self, delay: float, callback) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (pure use): returns are reported on the next event
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(handle)
            callback()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _follow_detectors(self) -> None:
        """Passive health reads request events only for pools with outlier detection:
        the sink is on the bus while the manager runs and some pool has it, and
        off otherwise (every request is published through each sink)."""
        want = self.started and bool(self.detectors)
        if want and not self._sink_on:
            self.bus.add_sink(self._sink)
            self._sink_on = True
        elif not want and self._sink_on:
            self.bus.remove_sink(self._sink)
            self._sink_on = False

    def _sink(self, event: Event) -> None:
        if type(event) is not RequestEvent:
            return
        detector = self.detectors.get(event.pool)
        if detector is None:
            return
        try:
            detector.on_event(event)
        except Exception:  # a sink must not raise into the data plane; say what broke
            log.exception("outlier detection failed on request %s", event.request_id)

    # ------------------------------------------------------------ view

    def state(self) -> dict:
        pools: dict[str, dict] = {}
        for pname, pool in self.runtime.pools.items():
            health = pool.config.health
            detector = self.detectors.get(pname)
            outlier = detector.state() if detector else {}
            backends = {}
            for name in pool.backends:
                checker = self.checkers.get((pname, name))
                entry = checker.state() if checker else {"type": None}
                if detector is not None:
                    entry["outlier"] = outlier.get(name, {})
                backends[name] = entry
            pools[pname] = {
                "health_check": health.model_dump(mode="json") if health else None,
                "outlier": pool.config.outlier.model_dump(mode="json")
                if pool.config.outlier else None,
                "backends": backends,
            }
        return {"running": self.started, "pools": pools}
