"""Replay a recorded trace through the lab's topology under several algorithms at once.

Theory of operation
-------------------
``replay(trace, algorithms)`` starts one sandbox per algorithm (the lab's starting
topology, or for a dashboard window the learner's config over toy backends of the same
names; through SandboxService like a lab run), all in parallel threads. Each gets the
learner's recorded config with every pool's ``balancer.algorithm`` replaced, applied
through the admin API, and waits until its pool is ready. The proxy's event stream is
opened first, as in a lab run. When every sandbox is ready they share one start instant,
so the replays run side by side on the same clock:

* **arrivals** are open loop: request ``i`` is sent at start + its recorded ``t`` whether
  or not earlier ones have been answered (a closed loop would let a slow algorithm slow
  its own traffic down and hide its queue). Each carries ``X-Request-Id: rp-<i>`` (the
  proxy keeps a sane client id, so events match trace lines) and
  ``X-LBLab-Replay-Seed: <seed>`` (the toy backend seeds that request's fault draws).
* **draws**: every pool's balancer gets ``balancer.seed`` (one seed per replay, the same
  in every lane; by default derived from the trace, so any two replays of one trace
  agree), so random, weighted random and power of two choices make the same draws in the
  same order.
* **faults**: the trace's fault schedule is applied to the same backends at the same lab
  seconds through their /_control API. Crashes, restarts and admin verbs are not replayed
  (the trace marks them; the result lists them).

With ``cost="pinned"`` no fault schedule is applied; instead each request carries
``X-LBLab-Replay-Cost: delay_ms=..;status=..[;fault=reset|crash]`` (its recorded backend
time and outcome) and the toy backend answers after exactly that, whatever its endpoint
and faults would do. Then every backend is equally fast for a given request, so the only
differences left are queueing: how an algorithm spreads concurrent work. The default
(backend state) is the counterfactual a learner asks about ("would it have avoided the
slow backend?"); pinned is the stricter control.

Afterwards each replay's request events (matched by request id) and what its client saw
go to replay_compare.summarise; the whole result is written as ``result.json`` in the
replay's folder (``<run_dir>/replays/<replay_id>/``) with a ``status.json`` the site polls.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from labs.framework import replay_compare, services
from labs.framework.definition import split_document
from labs.framework.recorder import EventRecorder
from labs.framework.replay_trace import Trace
from labs.sandbox import SandboxError, SandboxLimit, SandboxNotFound, SandboxService
from labs.sandbox.admin_client import AdminClient, AdminError, BackendControl
from labs.sandbox.limits import Limits
from labs.sandbox.service import default_state_dir

# How a replayed request's backend cost is made (module doc): "backend" replays the fault
# schedule and seeds each request's draws, so a request costs what *that* backend would
# charge at that moment; "pinned" makes whichever backend gets it answer after exactly the
# time, and with the status, the recorded run saw.
COST_MODES = ("backend", "pinned")
LEAD_S = 0.5  # from "all ready" to lab second 0: time for every thread to reach its loop
REQUEST_TIMEOUT_S = 30.0


class ReplayRefused(ValueError):
    """The replay cannot be run as asked (unknown algorithm, unsupported lab...)."""


class ReplayFailed(RuntimeError):
    """A sandbox did not start or broke: not the learner's fault."""


def known_algorithms() -> list[str]:
    from proxy.balancers import REGISTRY

    return sorted(REGISTRY)


def check_algorithms(algorithms: list[str]) -> list[str]:
    algos = [a.strip() for a in algorithms if a and a.strip()]
    if not algos:
        raise ReplayRefused("name at least one algorithm, e.g. --algorithms "
                            "round_robin,least_outstanding_requests")
    known = known_algorithms()
    bad = [a for a in algos if a not in known]
    if bad:
        raise ReplayRefused(f"unknown algorithm {', '.join(bad)}; choose from {', '.join(known)}")
    if len(set(algos)) != len(algos):
        raise ReplayRefused("each algorithm once: two replays of one algorithm are compared "
                            "with `labs replay --repeat`")
    return algos


def with_algorithm(config: dict, algorithm: str, seed: int | None = None) -> dict:
    """The config with every pool balanced by ``algorithm`` (its other settings kept) and,
    with ``seed``, every pool's balancer and every split route drawing from generators
    seeded with it."""
    out = json.loads(json.dumps(config))
    for pool in (out.get("pools") or {}).values():
        if isinstance(pool, dict):
            # The other balancer settings (hash key, choices...) are valid for every
            # algorithm and ignored by those that do not use them.
            balancer = dict(pool.get("balancer") or {})
            balancer["algorithm"] = algorithm
            if seed is not None:
                balancer["seed"] = seed
            pool["balancer"] = balancer
    if seed is not None:
        for route in (out.get("routes") or {}).values():
            if isinstance(route, dict) and route.get("split"):
                route["seed"] = seed  # a weighted split (a canary) rolls alike in every lane
    return out


def trace_seed(trace: Trace) -> int:
    """The seed a replay of ``trace`` uses unless told another: the same for every replay
    of one trace, so random and power-of-two-choices draw the same sequence each time (two
    replays then differ only where requests reach the proxy in another order)."""
    import hashlib

    digest = hashlib.sha256(f"{trace.slug}:{trace.run_id}".encode()).hexdigest()
    return int(digest[:12], 16)


@dataclass
class Setup:
    """What each replay sandbox is built from (Replayer._setup)."""
    topology: dict  # the sandbox's starting config (addresses rewritten on create)
    backends: list[str]
    redis_url: str | None
    settle: float  # seconds a pool may take to become ready


@dataclass
class Lane:
    """One algorithm's replay."""
    algorithm: str
    label: str
    sandbox_id: str
    sb: object = None
    admin: AdminClient | None = None
    recorder: EventRecorder | None = None
    client: dict = field(default_factory=dict)  # i -> {"status", "latency_ms", "late_ms"}
    events: list[dict] = field(default_factory=list)
    faults_applied: list[dict] = field(default_factory=list)
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class Replayer:
    def __init__(self, trace: Trace, algorithms: list[str], state_dir: Path | None = None,
                 out_dir: Path | None = None, max_sandboxes: int = 30,
                 progress: Callable[[dict], None] | None = None, labels: list[str] | None = None,
                 cost: str = "backend", seed: int | None = None):
        if cost not in COST_MODES:
            raise ReplayRefused(f"cost mode {cost!r}: use one of {', '.join(COST_MODES)}")
        if seed is not None and not 0 <= seed < 2 ** 63:
            raise ReplayRefused(f"seed must be from 0 to 2**63-1, got {seed}")
        self.cost = cost
        # One seed per replay, the same in every lane: lanes of one algorithm draw alike.
        self.seed = trace_seed(trace) if seed is None else seed
        self.trace = trace
        self.algorithms = algorithms
        self.state_dir = Path(state_dir or default_state_dir())
        self.out_dir = Path(out_dir) if out_dir else None
        self.replay_id = (self.out_dir.name if self.out_dir else
                          f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
        self.progress_cb = progress
        self.service = SandboxService(self.state_dir, max_sandboxes=max_sandboxes,
                                      start_timeout=30.0, limits=Limits.from_env())
        tag = secrets.token_hex(3)
        labels = labels or algorithms
        self.lanes = [Lane(a, label, f"rp-{trace.slug[:18]}-{tag}-{k}")
                      for k, (a, label) in enumerate(zip(algorithms, labels))]
        self.start_at: float | None = None

    # -- progress ------------------------------------------------------------------------

    def progress(self, phase: str, message: str, fraction: float, **extra) -> None:
        status = {"replay_id": self.replay_id, "state": "running", "phase": phase,
                  "message": message, "progress": round(fraction, 3),
                  "algorithms": self.algorithms, "updated_at": time.time(), **extra}
        if self.out_dir:
            write_json(self.out_dir / "status.json", status)
        if self.progress_cb:
            self.progress_cb(status)

    # -- the run -------------------------------------------------------------------------

    def run(self) -> dict:
        try:
            return self._run()
        except Exception as exc:
            if self.out_dir:
                write_json(self.out_dir / "status.json", {
                    "replay_id": self.replay_id, "state": "failed", "phase": "error",
                    "message": str(exc), "algorithms": self.algorithms,
                    "updated_at": time.time()})
            raise

    def _run(self) -> dict:
        setup = self._setup()
        if self.out_dir:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.progress("sandbox", f"starting {len(self.lanes)} sandboxes", 0.05)
        threads = [threading.Thread(target=self._lane, args=(lane, setup),
                                    name=f"replay-{lane.algorithm}", daemon=True)
                   for lane in self.lanes]
        try:
            for th in threads:
                th.start()
            for lane in self.lanes:
                lane.ready.wait(60)
            failed = [lane for lane in self.lanes if lane.error]
            if failed:
                self.start_at = -1.0  # tells the other lanes to stop
                raise ReplayFailed("; ".join(f"{ln.label}: {ln.error}" for ln in failed))
            span = self.trace.end
            self.start_at = time.time() + LEAD_S
            self.progress("traffic", f"replaying {len(self.trace.requests)} requests over "
                          f"{span:.1f} s under {', '.join(self.algorithms)}", 0.2)
            while any(th.is_alive() for th in threads):
                done = min(1.0, max(0.0, (time.time() - self.start_at) / max(span, 0.1)))
                self.progress("traffic", f"replaying: lab second {done * span:.1f} of "
                              f"{span:.1f}", 0.2 + 0.7 * done)
                for th in threads:
                    th.join(timeout=0.25)
            failed = [lane for lane in self.lanes if lane.error]
            if failed:
                raise ReplayFailed("; ".join(f"{ln.label}: {ln.error}" for ln in failed))
        finally:
            self.start_at = self.start_at or -1.0
            for th in threads:
                th.join(timeout=REQUEST_TIMEOUT_S + 10)
            for lane in self.lanes:
                try:
                    self.service.stop(lane.sandbox_id, grace=2.0)
                except SandboxError:
                    pass
        result = replay_compare.compare(self.trace, [
            replay_compare.LaneData(lane.label, lane.algorithm, lane.events, lane.client,
                                    lane.faults_applied) for lane in self.lanes])
        result["replay_id"] = self.replay_id
        result["cost"] = self.cost
        result["seed"] = self.seed
        result["source"] = self.trace.source
        result["notes"] = list(self.trace.notes)
        if self.out_dir:
            write_json(self.out_dir / "result.json", result)
            write_json(self.out_dir / "status.json", {
                "replay_id": self.replay_id, "state": "done", "phase": "done",
                "progress": 1.0, "algorithms": self.algorithms, "updated_at": time.time()})
        return result

    def _setup(self) -> "Setup":
        """What every lane's sandbox is made of: the lab's starting topology, or for a
        dashboard window the learner's own config over their toy backends' names."""
        if self.trace.source == "dashboard":
            return Setup(topology=self.trace.config, backends=list(self.trace.backends),
                         redis_url=None, settle=2.0)
        from labs.framework import registry

        lab = registry.get(self.trace.slug)
        if lab.spec.sandbox.apps:
            raise ReplayRefused(f"lab {lab.slug} runs {', '.join(lab.spec.sandbox.apps)} in "
                                "place of a toy backend; replay needs toy backends (they apply "
                                "the recorded fault schedule and per-request seeds)")
        if lab.proxy_names:
            raise ReplayRefused(f"lab {lab.slug} runs {len(lab.proxy_names)} balancers; a "
                                "replay runs one, so it would not be the same topology")
        topology, _ = split_document(lab.topology)
        redis_url = services.redis_url(self.state_dir) if lab.spec.sandbox.redis else None
        if lab.spec.sandbox.pki:
            services.ensure_pki(lab.spec.sandbox.pki)
        return Setup(topology=topology, backends=lab.backend_names, redis_url=redis_url,
                     settle=lab.spec.settle)

    def _lane(self, lane: Lane, setup: "Setup") -> None:
        try:
            self._prepare(lane, setup)
        except Exception as exc:  # reported by run(): every lane's problem, not the first
            lane.error = str(exc)
        finally:
            lane.ready.set()
        if lane.error:
            return
        while self.start_at is None:
            time.sleep(0.01)
        if self.start_at < 0:
            return
        try:
            # Pinned costs replace the backends' behaviour: no fault schedule then.
            fault_threads = [threading.Timer(max(0.0, self.start_at + f["t"] - time.time()),
                                             self._fault, args=(lane, f))
                             for f in self.trace.replayable_faults()
                             if self.cost == "backend"]
            for th in fault_threads:
                th.daemon = True
                th.start()
            asyncio.run(fire(self.trace, lane.sb.proxy_url, self.start_at, lane.client,
                             pinned=self.cost == "pinned"))
            for th in fault_threads:
                th.join(timeout=5)
            lane.recorder.wait_quiet(0.3, 3.0)
            events = lane.recorder.stop()
            lane.events = [e for e in events if e.get("type") == "request"
                           and str(e.get("request_id", "")).startswith("rp-")]
            for e in lane.events:
                e["t"] = round(float(e.get("ts", 0)) - self.start_at, 4)
        except Exception as exc:
            lane.error = f"{type(exc).__name__}: {exc}"
        finally:
            if lane.recorder is not None:
                lane.recorder.stop()

    def _prepare(self, lane: Lane, setup: "Setup") -> None:
        from labs.framework.runner import place

        topology = setup.topology
        try:
            self.service.stop(lane.sandbox_id, grace=1.0)
        except SandboxNotFound:
            pass
        try:
            lane.sb = self.service.create(lane.sandbox_id, backends=setup.backends,
                                          config=topology, redis_url=setup.redis_url)
        except SandboxLimit as exc:
            raise ReplayFailed(f"the lab host is full: {exc}") from None
        token = ((self.trace.config.get("admin") or {}).get("token")
                 or (topology.get("admin") or {}).get("token"))
        lane.admin = AdminClient(lane.sb.admin_url, timeout=5.0, token=token)
        lane.recorder = EventRecorder(lane.sb.admin_url, token=token).start()
        config = with_algorithm(self.trace.config, lane.algorithm, self.seed)
        try:
            lane.admin.put_config(place(config, lane.sb, lane.sb.inner_host))
        except AdminError as exc:
            detail = "; ".join(f"{e.get('path', '')}: {e.get('message', '')}"
                               for e in exc.errors) or exc.message
            raise ReplayRefused(f"the proxy refused the config under {lane.algorithm}: "
                                f"{detail}") from None
        deadline = time.monotonic() + max(2.0, setup.settle)
        while time.monotonic() < deadline:
            state = lane.admin.state()
            waiting = [b for pool in (state.get("pools") or {}).values()
                       for b in pool.get("backends") or []
                       if b.get("intent") == "active" and not b.get("eligible")]
            if not waiting:
                break
            time.sleep(0.05)

    def _fault(self, lane: Lane, f: dict) -> None:
        if self.start_at is None or self.start_at < 0:
            return
        control = BackendControl(lane.sb.backends[f["backend"]], timeout=3)
        try:
            if f.get("clear"):
                control.clear_faults()
            if f.get("set"):  # after a clear on the same line: the backend's whole knob set
                control.set_faults(f["set"])
            lane.faults_applied.append({**f, "applied_t": round(time.time() - self.start_at, 4)})
        except AdminError as exc:
            lane.faults_applied.append({**f, "error": str(exc)})


def pinned_header(recorded: dict) -> str:
    """X-LBLab-Replay-Cost for one request in pinned mode: the time the backend took in the
    recorded run and what it answered (a reset or a cut response as the fault)."""
    delay = recorded.get("backend_ms")
    if delay is None:
        delay = recorded.get("latency_ms") or 0
    status = int(recorded.get("status") or 0) or 502
    term = recorded.get("termination") or "--"
    fault = {"SH": ";fault=reset", "SD": ";fault=crash"}.get(term, "")
    return f"delay_ms={max(0.0, float(delay)):.3f};status={status}{fault}"


async def fire(trace: Trace, base_url: str, start_at: float, out: dict,
               pinned: bool = False) -> None:
    """Send every request of the trace at start_at + its t (open loop); fill ``out``."""
    import aiohttp
    from yarl import URL

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    base = base_url.rstrip("/")
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()  # wall = loop time + offset

    async def one(session, r: dict) -> None:
        due = start_at + r["t"] - offset
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = loop.time()
        headers = {"X-Request-Id": f"rp-{r['i']}", "X-LBLab-Replay-Seed": str(r["seed"])}
        if pinned:
            headers["X-LBLab-Replay-Cost"] = pinned_header(r["recorded"])
        body = b"x" * r["bytes_in"] if r.get("bytes_in") else None
        entry = {"late_ms": round((sent - due) * 1000, 3)}
        try:
            async with session.request(r["method"], URL(base + r["path"], encoded=True),
                                       headers=headers, data=body,
                                       allow_redirects=False) as resp:
                await resp.read()
                entry["status"] = resp.status
                entry["backend"] = resp.headers.get("X-Backend")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            entry["status"] = 0
            entry["error"] = f"{type(exc).__name__}: {exc}"[:200]
        entry["latency_ms"] = round((loop.time() - sent) * 1000, 3)
        out[r["i"]] = entry

    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     auto_decompress=False) as session:
        await asyncio.gather(*(one(session, r) for r in trace.requests))


def replay(trace: Trace, algorithms: list[str], **kwargs) -> dict:
    """Replay ``trace`` under each algorithm side by side; see the module doc."""
    return Replayer(trace, check_algorithms(algorithms), **kwargs).run()


def replay_dir(run_dir: Path, replay_id: str | None = None) -> Path:
    return Path(run_dir) / "replays" / (replay_id or
                                         f"{time.strftime('%Y%m%d-%H%M%S')}-"
                                         f"{secrets.token_hex(3)}")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


# ---------------------------------------------------------------- in the background (site)

WEB_MAX_ALGORITHMS = 4  # each algorithm is one sandbox for the length of the trace


def start_background(run_dir: Path, algorithms: list[str], state_dir: Path) -> str:
    """Start ``manage.py labs replay`` for a run as its own process; return the replay id.

    The site never replays inside a web request: this writes a "starting" status at once,
    and the process writes status.json while it runs and result.json at the end
    (``read``). One replay of a run at a time."""
    import subprocess
    import sys

    from labs.sandbox import procs
    from labs.sandbox.commands import REPO_ROOT

    algos = check_algorithms(algorithms)
    if len(algos) > WEB_MAX_ALGORITHMS:
        raise ReplayRefused(f"pick at most {WEB_MAX_ALGORITHMS} algorithms: each one runs in "
                            "a sandbox of its own")
    from labs.framework import replay_trace

    replay_trace.for_run(run_dir)  # TraceError now, not later in the background
    for other in sorted((Path(run_dir) / "replays").glob("*/pid.json")):
        try:
            pid = json.loads(other.read_text())
        except ValueError:
            continue
        status = read(run_dir, other.parent.name)
        if status.get("state") == "running" and procs.pid_alive(pid["pid"], pid["pid_start"]):
            raise ReplayRefused("a replay of this run is still going: wait for it")
    out = replay_dir(run_dir)
    out.mkdir(parents=True)
    write_json(out / "status.json", {"replay_id": out.name, "state": "running",
                                     "phase": "starting", "message": "starting",
                                     "progress": 0.0, "algorithms": algos,
                                     "updated_at": time.time()})
    argv = [sys.executable, str(REPO_ROOT / "manage.py"), "labs", "replay", str(run_dir),
            "--algorithms", ",".join(algos), "--out", str(out), "--state-dir", str(state_dir)]
    with open(out / "cli.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (out / "pid.json").write_text(json.dumps({"pid": proc.pid,
                                              "pid_start": procs.start_ticks(proc.pid)}))
    threading.Thread(target=proc.wait, daemon=True).start()  # no zombie in the web process
    return out.name


def read(run_dir: Path, replay_id: str) -> dict:
    """{"state": running|done|failed, "message", "progress", "result"?} of one replay."""
    from labs.sandbox import procs

    out = Path(run_dir) / "replays" / replay_id
    if "/" in replay_id or replay_id.startswith(".") or not out.is_dir():
        return {"state": "missing", "message": f"no replay {replay_id} of this run"}
    try:
        status = json.loads((out / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        status = {"state": "running", "message": "starting", "progress": 0.0}
    if status.get("state") == "running":
        try:
            pid = json.loads((out / "pid.json").read_text())
            alive = procs.pid_alive(pid["pid"], pid["pid_start"])
        except (FileNotFoundError, ValueError, KeyError):
            alive = True  # just started: the pid file follows the status
        if not alive:
            time.sleep(0.2)
            try:
                status = json.loads((out / "status.json").read_text())
            except (FileNotFoundError, ValueError):
                pass
            if status.get("state") == "running":
                status = {**status, "state": "failed", "message": "the replay ended without "
                          "a result: " + procs.tail(out / "cli.log", 6)}
    if status.get("state") == "done":
        try:
            status["result"] = json.loads((out / "result.json").read_text())
        except (FileNotFoundError, ValueError):
            status = {**status, "state": "failed", "message": "the replay left no result"}
    return status
