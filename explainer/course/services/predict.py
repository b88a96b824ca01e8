"""Predict, then observe: the learner commits to a prediction, the real lab runs it.

Theory of operation
-------------------
An exercise (content/predict/*.yaml) names a proxy config, faults for the toy backends
and a scenario. `run()` does, in the learner's own sandbox:

1. start it if needed (services.sandbox.ensure), clear every fault, apply the config
   with fresh balancers (a round-robin index and sticky tables start from zero, so the
   exercise's "the next requests" is well defined), wait until the pool is ready;
2. set the exercise's faults, then run the scenario:
   * ``sequence``: steps in order: real requests through the proxy (each with its own
     ``X-Request-Id``, from a chosen 127.x client address, with a cookie jar when asked,
     some in the background), admin verbs (drain, maintenance, activate), a balancer
     switch, faults, pauses. Every request's routing event is read back from the admin
     API (``GET /requests/<id>``): the backend chosen, the status, who made the
     response, the latency, the algorithm's inputs.
   * ``health_race``: faults set at one instant t0, then the proxy's state is watched
     until the watched backends are unhealthy (or a timeout); the proxy's own
     ``state_change`` and ``health_probe`` events say when each one was taken out.
3. read each prediction field's *observation* from what happened (grammar below),
   score it, and keep the evidence: the real decisions, the timeline, a diagram.

A ``simulation`` scenario runs no sandbox: it calls a pure model from
explainer/course/simulations.py once per case (for what one machine cannot show: direct
server return, DNS-based scaling), and the page labels everything it shows as simulated.

Observations (the ``observe`` of a field; n counts requests from 1 in sending order):

    backends[:TAG]  statuses[:TAG]         the lists, for a sequence field
    backend:N  status:N  made_by:N         one request (made_by: proxy | backend | none)
    outcome:N:BACKEND                      same | other | error (where request N went)
    seconds:N                              how long request N took, client side
    moved:TAG_A:TAG_B                      clients whose backend differs between two rounds
    who_moved:TAG_A:TAG_B:BACKEND          none | only (only clients that were on BACKEND
                                           moved) | also (others moved too)
    p50:TAG  p99:TAG                       latency percentiles (ms, the proxy's measure)
    count:BACKEND[:TAG]                    requests that BACKEND served
    first_unhealthy  detect_s:B  unhealthy:B   (health_race)
    sim:CASE:KEY                           an output of the simulation's case (simulation)

Scores: a sequence scores the share of positions right; a choice 1 or 0; a number 1
within its tolerance (absolute, or a percentage of what was observed), 0.5 within
twice that, else 0. The run's score is the mean over its fields.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time

from django.conf import settings

from explainer import diagrams
from explainer.course.content import Exercise, PredictField, catalog
from explainer.course.models import PredictionRun
from explainer.course.services import sandbox as sbx
from explainer.services.admin_client import AdminError, AsyncAdminClient

LIST_OBS = {"backends", "statuses"}
STR_OBS = {"backend", "status", "made_by", "outcome", "who_moved", "first_unhealthy",
           "unhealthy"}
NUM_OBS = {"seconds", "moved", "p50", "p99", "count", "detect_s"}
SEQUENCE_ONLY = {"backends", "statuses", "backend", "status", "made_by", "outcome", "seconds",
                 "moved", "who_moved", "p50", "p99", "count"}
RACE_ONLY = {"first_unhealthy", "detect_s", "unhealthy"}

# Each simulation model: the function, and its outputs a field may read (number or choice).
SIM_OUTPUTS = {
    "dsr_bytes": {"client_to_balancer_b": "number", "balancer_to_backend_b": "number",
                  "backend_to_client_b": "number", "response_acks_b": "number",
                  "request_acks_b": "number", "total_b": "number", "dsr_balancer_b": "number",
                  "relay_balancer_b": "number", "dsr_share_pct": "number",
                  "saving_factor": "number", "biggest_inbound": "choice"},
    "alb_vs_nlb": {"new_share_30s": "number", "new_share_after_ttl": "number",
                   "settle_s": "number", "failed_alb": "number", "failed_alb_pct": "number",
                   "failed_nlb": "number", "who_failed": "choice"},
    "balls_into_bins": {"max_random": "number", "max_two": "number", "max_three": "number"},
    "maglev_disruption": {"modulo_moved_pct": "number", "maglev_moved_pct": "number",
                          "maglev_gone_share_pct": "number",
                          "maglev_others_moved_pct": "number", "maglev_slot_spread": "number"},
    "flapping": {"flips": "number", "flips_per_hour": "number", "out_pct": "number"},
}
# What the evidence table shows for each model, in this order, with a label.
SIM_SHOWN = {
    "dsr_bytes": [("request_b", "request (payload)", "B"), ("response_b", "response (payload)", "B"),
                  ("client_to_balancer_b", "client → balancer (all the client's packets)", "B"),
                  ("balancer_to_backend_b", "balancer → backend", "B"),
                  ("backend_to_client_b", "backend → client, directly (DSR)", "B"),
                  ("response_acks_b", "of which: the client's ACKs of the response", "B"),
                  ("dsr_balancer_b", "the balancer carries, with DSR", "B"),
                  ("relay_balancer_b", "the balancer carries, relaying both ways", "B"),
                  ("dsr_share_pct", "share of all bytes through the balancer, DSR", "%"),
                  ("saving_factor", "relaying ÷ DSR", "×")],
    "alb_vs_nlb": [("new_share_30s", "share of requests on the new nodes, 30 s after scale-out", "%"),
                   ("new_share_after_ttl", "… 70–100 s after scale-out", "%"),
                   ("settle_s", "seconds until every TTL-respecting client has the new answer", "s"),
                   ("failed_alb", "first attempts to the stopped node (ALB-like)", "requests"),
                   ("failed_alb_pct", "… as a share of requests after it stopped", "%"),
                   ("failed_nlb", "failed requests, static addresses (NLB-like)", "requests"),
                   ("who_failed", "who failed", "")],
    "balls_into_bins": [("mean", "requests per backend on average", ""),
                        ("max_random", "busiest backend, random (median of the trials)", "requests"),
                        ("max_random_range", "… lowest–highest over the trials", ""),
                        ("max_two", "busiest backend, two choices (median)", "requests"),
                        ("max_two_range", "… lowest–highest", ""),
                        ("max_three", "busiest backend, three choices (median)", "requests"),
                        ("max_three_range", "… lowest–highest", "")],
    "maglev_disruption": [("modulo_moved_pct", "keys that change backend, modulo (hash % n)", "%"),
                          ("maglev_moved_pct", "keys that change backend, Maglev", "%"),
                          ("maglev_gone_share_pct", "… of which the leaving backend's keys", "%"),
                          ("maglev_others_moved_pct", "… and keys of backends that stayed", "%"),
                          ("maglev_slot_spread", "Maglev table: most minus fewest slots per backend", "slots")],
    "flapping": [("probes", "health probes in the hour", ""),
                 ("flips", "state changes (healthy ↔ unhealthy)", ""),
                 ("out_pct", "share of the hour out of rotation", "%")],
}


def _sim_function(model: str):
    from explainer.course import simulations

    return getattr(simulations, model)


def simulation_problems(spec) -> list[str]:
    """Parameters a simulation's cases give that its model does not take (or refuses)."""
    import inspect

    fn = _sim_function(spec.model)
    accepted = set(inspect.signature(fn).parameters)
    out = []
    for case, params in spec.cases.items():
        unknown = sorted(set(params) - accepted)
        if unknown:
            out.append(f"cases.{case}: {spec.model} takes no {', '.join(unknown)} "
                       f"(it takes {', '.join(sorted(accepted))})")
    return out


def simulate(spec) -> dict[str, dict]:
    """Every case's outputs (pure; a few hundred milliseconds at most)."""
    fn = _sim_function(spec.model)
    return {case: fn(**params) for case, params in spec.cases.items()}


# ---------------------------------------------------------------- checking exercises

def request_plan(ex: Exercise) -> list[str | None]:
    """The tag of every request the steps send, in order (index 0 is request 1)."""
    tags: list[str | None] = []
    for step in ex.steps:
        if step.request is not None:
            tags += [step.tag] * (len(step.clients) if step.clients else step.repeat)
    return tags


def observation_problem(ex: Exercise, f: PredictField) -> str | None:
    """Why a field cannot read its observation, or None when it can."""
    parts = f.observe.split(":")
    name, args = parts[0], parts[1:]
    if name == "sim" or ex.scenario == "simulation":
        if name != "sim" or ex.scenario != "simulation" or ex.simulation is None:
            return "sim:CASE:KEY is the one observation of a simulation scenario"
        if len(args) != 2 or args[0] not in ex.simulation.cases:
            return (f"sim takes a case and an output (sim:CASE:KEY); cases: "
                    f"{', '.join(ex.simulation.cases)}")
        outputs = SIM_OUTPUTS[ex.simulation.model]
        if args[1] not in outputs:
            return f"{ex.simulation.model} has no output {args[1]!r} ({', '.join(outputs)})"
        if outputs[args[1]] != f.kind:
            return f"{args[1]} is a {outputs[args[1]]}, not a {f.kind}"
        return None
    if name not in LIST_OBS | STR_OBS | NUM_OBS:
        return f"unknown observation {name!r}"
    if ex.scenario == "sequence" and name in RACE_ONLY:
        return f"{name} is an observation of a health_race"
    if ex.scenario == "health_race" and name in SEQUENCE_ONLY:
        return f"{name} is an observation of a sequence scenario"
    kind_ok = {"sequence": LIST_OBS, "choice": STR_OBS, "number": NUM_OBS}[f.kind]
    if name not in kind_ok:
        return f"a {f.kind} field cannot read {name} (use one of {', '.join(sorted(kind_ok))})"
    tags = request_plan(ex)
    known_tags = {t for t in tags if t}

    def index_ok(arg: str) -> str | None:
        if not arg.isdigit() or not 1 <= int(arg) <= len(tags):
            return f"request number {arg!r}: the steps send {len(tags)} requests (1..{len(tags)})"
        return None

    def tag_ok(arg: str) -> str | None:
        return None if arg in known_tags else f"no step has tag {arg!r} ({', '.join(sorted(known_tags)) or 'none'})"

    if name in LIST_OBS:
        if len(args) > 1:
            return f"{name} takes at most a tag"
        if args and (why := tag_ok(args[0])):
            return why
        n = len([t for t in tags if not args or t == args[0]])
        if f.count != n:
            return f"count is {f.count} but {f.observe} has {n} requests"
        return None
    if name in ("backend", "status", "made_by", "seconds"):
        return index_ok(args[0]) if len(args) == 1 else f"{name} takes one request number"
    if name == "outcome":
        if len(args) != 2:
            return "outcome takes a request number and a backend (outcome:5:b1)"
        return index_ok(args[0]) or (None if args[1] in sbx.BACKENDS else f"no backend {args[1]!r}")
    if name == "moved":
        if len(args) != 2:
            return "moved takes two tags (moved:before:after)"
        return tag_ok(args[0]) or tag_ok(args[1])
    if name == "who_moved":
        if len(args) != 3 or args[2] not in sbx.BACKENDS:
            return "who_moved takes two tags and a backend (who_moved:before:after:b4)"
        return tag_ok(args[0]) or tag_ok(args[1])
    if name in ("p50", "p99"):
        return tag_ok(args[0]) if len(args) == 1 else f"{name} takes one tag"
    if name == "count":
        if not 1 <= len(args) <= 2 or args[0] not in sbx.BACKENDS:
            return "count takes a backend and optionally a tag (count:b3:lor)"
        return tag_ok(args[1]) if len(args) == 2 else None
    # race observations
    if name == "first_unhealthy":
        return None if not args else "first_unhealthy takes no argument"
    if len(args) != 1 or args[0] not in (ex.race.watch if ex.race else []):
        return f"{name} takes one of the watched backends ({', '.join(ex.race.watch if ex.race else [])})"
    return None


# ---------------------------------------------------------------- observations

def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (p99 of 20 samples is the slowest one)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 2)


def observe(ex: Exercise, spec: str, records: list[dict], race: dict | None,
            sim: dict | None = None):
    parts = spec.split(":")
    name, args = parts[0], parts[1:]
    if name == "sim":
        return (sim or {}).get(args[0], {}).get(args[1])
    if name in RACE_ONLY:
        race = race or {}
        if name == "first_unhealthy":
            return race.get("first") or "none"
        detected = (race.get("detected") or {}).get(args[0])
        if name == "detect_s":
            return detected
        return "yes" if detected is not None else "no"

    def of_tag(tag: str | None) -> list[dict]:
        return [r for r in records if tag is None or r["tag"] == tag]

    def nth(arg: str) -> dict:
        return records[int(arg) - 1]

    if name == "backends":
        return [r["backend"] or "none" for r in of_tag(args[0] if args else None)]
    if name == "statuses":
        return [str(r["status"] or "none") for r in of_tag(args[0] if args else None)]
    if name == "backend":
        return nth(args[0])["backend"] or "none"
    if name == "status":
        return str(nth(args[0])["status"] or "none")
    if name == "made_by":
        return nth(args[0])["made_by"]
    if name == "outcome":
        r = nth(args[0])
        if r["made_by"] != "backend" or not r["backend"]:
            return "error"
        return "same" if r["backend"] == args[1] else "other"
    if name == "seconds":
        return round(nth(args[0])["seconds"], 2)
    if name == "moved":
        before = {r["client"]: r["backend"] for r in of_tag(args[0])}
        after = {r["client"]: r["backend"] for r in of_tag(args[1])}
        return sum(1 for c, b in after.items() if c in before and before[c] != b)
    if name == "who_moved":
        before = {r["client"]: r["backend"] for r in of_tag(args[0])}
        after = {r["client"]: r["backend"] for r in of_tag(args[1])}
        moved = [c for c, b in after.items() if c in before and before[c] != b]
        if not moved:
            return "none"
        return "only" if all(before[c] == args[2] for c in moved) else "also"
    if name in ("p50", "p99"):
        return percentile([r["latency_ms"] for r in of_tag(args[0]) if r["status"]],
                          50 if name == "p50" else 99)
    if name == "count":
        return sum(1 for r in of_tag(args[1] if len(args) > 1 else None)
                   if r["backend"] == args[0])
    raise ValueError(f"unknown observation {spec!r}")


def score_field(f: PredictField, predicted, observed) -> float:
    if f.kind == "sequence":
        observed = list(observed or [])
        if not observed:
            return 0.0
        right = sum(1 for p, o in zip(predicted, observed) if str(p) == str(o))
        return round(right / max(len(observed), len(predicted)), 4)
    if f.kind == "choice":
        return 1.0 if str(predicted) == str(observed) else 0.0
    if observed is None:
        return 0.0
    tol = max(f.tolerance, f.tolerance_pct / 100 * abs(float(observed)))
    diff = abs(float(predicted) - float(observed))
    if diff <= tol + 1e-9:
        return 1.0
    if diff <= 2 * tol + 1e-9:
        return 0.5
    return 0.0


# ---------------------------------------------------------------- scenarios

def _admin_step(sb, step, timeline: list[dict], t0: float) -> None:
    client = sbx.admin(sb)
    try:
        if step.action:
            client.set_intent("web", step.backend, step.action)
            what = f"{step.action} {step.backend} (admin API)"
        else:
            client.set_balancer("web", dict(step.balancer))
            what = f"balancer of pool web → {step.balancer.get('algorithm')} (admin API)"
    except AdminError as exc:
        raise sbx.SandboxUnavailable(f"the proxy refused a step of the exercise: {exc.message}",
                                     status=422, errors=exc.errors) from None
    timeline.append({"t": round(time.monotonic() - t0, 3), "what": what})


def run_sequence(sb, ex: Exercise) -> tuple[list[dict], list[dict]]:
    """Send the steps' requests and changes; returns (records, timeline)."""
    records: list[dict] = []
    timeline: list[dict] = []
    sent: dict[int, sbx.Sent] = {}
    jars: dict[str | None, dict] = {}
    threads: list[threading.Thread] = []
    t0 = time.monotonic()

    def go(index: int, step, client: str | None) -> None:
        req = step.request
        jar = jars.setdefault(client, {}) if req.jar else None
        result, cookies = sbx.send(sb, index, req.path, req.method, client=client,
                                   headers=req.headers, cookies=dict(jar) if jar else None,
                                   timeout=req.timeout, prefix=f"predict-{ex.slug[:20]}",
                                   tag=step.tag)
        if jar is not None:
            jar.update(cookies)
        sent[index] = result

    for step in ex.steps:
        if step.request is not None:
            for client in (step.clients or [None] * step.repeat):
                index = len(records) + 1
                records.append({"index": index, "tag": step.tag, "client": client,
                                "t": round(time.monotonic() - t0, 3)})
                if step.background:
                    thread = threading.Thread(target=go, args=(index, step, client), daemon=True)
                    thread.start()
                    threads.append(thread)
                    time.sleep(0.05)  # let it reach the backend before the next step
                else:
                    go(index, step, client)
        elif step.action or step.balancer is not None:
            _admin_step(sb, step, timeline, t0)
        elif step.faults is not None:
            sbx.set_faults(sb, step.faults)
            timeline.append({"t": round(time.monotonic() - t0, 3),
                             "what": "faults: " + "; ".join(f"{b} {k}" for b, k in step.faults.items())})
        elif step.sleep is not None:
            time.sleep(step.sleep)
    for thread in threads:
        thread.join(timeout=20)

    events = sbx.events_for(sb, [s.request_id for s in sent.values()])
    for rec in records:
        s = sent.get(rec["index"])
        if s is None:
            rec.update(status=0, backend=None, made_by="none", latency_ms=0, seconds=0,
                       why="the request did not finish", request_id=None)
            continue
        event = events.get(s.request_id) or {}
        proxy_made = bool(event.get("proxy_error") or s.proxy_error)
        rec.update(
            request_id=s.request_id, status=s.status,
            backend=event.get("backend") or s.backend_header,
            made_by="none" if not s.status else ("proxy" if proxy_made else "backend"),
            error_code=s.proxy_error, latency_ms=round(float(event.get("latency_ms")
                                                             or s.seconds * 1000), 2),
            seconds=s.seconds, why=sbx.why_text(event) if event else (s.error or ""),
            termination=event.get("termination"), client_error=s.error,
            cookie=bool(s.headers.get("Cookie")),
            event=event,
        )
    return records, timeline


async def _replay(admin_url: str, types: list[str]) -> list[dict]:
    client = AsyncAdminClient(admin_url, timeout=float(getattr(settings, "LBLAB_ADMIN_TIMEOUT", 3)))
    return await client.replay(types=types, count=4000, idle=0.2, deadline=2.0)


def run_race(sb, ex: Exercise) -> dict:
    """Set the race's faults at one instant; watch the proxy take backends out."""
    race = ex.race
    client = sbx.admin(sb)
    t0 = time.time()
    sbx.set_faults(sb, race.faults)
    deadline = time.monotonic() + race.timeout
    while time.monotonic() < deadline:
        state = client.state()
        down = {b["name"] for pool in (state.get("pools") or {}).values()
                for b in pool.get("backends") or [] if b.get("health") == "unhealthy"}
        if set(race.watch) <= down:
            break
        time.sleep(0.05)
    time.sleep(0.1)  # the last state_change event is published with the state change
    try:
        events = asyncio.run(_replay(sb.admin_url, ["state_change", "health_probe"]))
    except AdminError as exc:
        raise sbx.SandboxUnavailable(f"could not read the proxy's events: {exc.message}") from None
    after = sorted((e for e in events if float(e.get("ts") or 0) >= t0),
                   key=lambda e: e.get("ts", 0))
    detected: dict[str, float] = {}
    changes, probes = [], {}
    for e in after:
        name = e.get("backend")
        if e.get("type") == "state_change":
            changes.append({"t": round(e["ts"] - t0, 3), "backend": name, "pool": e.get("pool"),
                            "kind": e.get("kind"), "old": e.get("old"), "new": e.get("new"),
                            "cause": e.get("cause")})
            if e.get("kind") == "health" and e.get("new") == "unhealthy" and name not in detected:
                detected[name] = round(e["ts"] - t0, 2)
        elif e.get("type") == "health_probe" and name in race.watch:
            counts = probes.setdefault(name, {"ok": 0, "fail": 0, "pool": e.get("pool")})
            counts["ok" if e.get("ok") else "fail"] += 1
    watched = {b: t for b, t in detected.items() if b in race.watch}
    first = min(watched, key=watched.get) if watched else None
    episode = None
    if first:
        pool = next((c["pool"] for c in changes if c["backend"] == first), None)
        # From a moment before the fault (the last good probes) to just after its removal.
        until = t0 + watched[first] + 0.05
        shown = sorted((e for e in events if t0 - 1.0 <= float(e.get("ts") or 0) <= until),
                       key=lambda e: e.get("ts", 0))
        episode = diagrams.health_episode(shown, first, pool, limit=16)
    return {"t0": t0, "detected": watched, "first": first, "changes": changes,
            "probes": probes, "episode": episode}


# ---------------------------------------------------------------- the run

def config_of(ex: Exercise) -> dict:
    return catalog().exercise_configs.get(ex.slug, {})


def _score(row: PredictionRun, ex: Exercise, prediction: dict, records, race, sim) -> None:
    observed, scores = {}, {}
    for f in ex.predict:
        value = observe(ex, f.observe, records, race, sim)
        observed[f.id] = value
        scores[f.id] = score_field(f, prediction.get(f.id), value)
    row.observed = observed
    row.field_scores = scores
    row.score = round(sum(scores.values()) / len(scores), 4)


def sim_evidence(ex: Exercise, results: dict[str, dict]) -> list[dict]:
    """One table per case: its parameters and the outputs the page shows."""
    out = []
    for case, result in results.items():
        rows = [{"label": label, "value": result.get(key), "unit": unit}
                for key, label, unit in SIM_SHOWN[ex.simulation.model] if key in result]
        out.append({"case": case, "params": ex.simulation.cases[case], "rows": rows,
                    "timeline": result.get("timeline")})
    return out


def run_simulation(learner_key: str, ex: Exercise, prediction: dict) -> PredictionRun:
    """Score a prediction against the exercise's simulation (no sandbox involved)."""
    started = time.monotonic()
    row = PredictionRun(learner_key=learner_key, exercise_slug=ex.slug, prediction=prediction)
    results = simulate(ex.simulation)
    _score(row, ex, prediction, [], None, results)
    row.evidence = {"simulation": sim_evidence(ex, results),
                    "notes": ["A simulation, not a run of the proxy: the numbers come from "
                              "the model in explainer/course/simulations.py with the "
                              "parameters shown."]}
    row.seconds = round(time.monotonic() - started, 2)
    row.save()
    return row


def run(learner_key: str, ex: Exercise, prediction: dict) -> PredictionRun:
    """Run the exercise for real in the learner's sandbox and score the prediction."""
    if ex.scenario == "simulation":
        return run_simulation(learner_key, ex, prediction)
    started = time.monotonic()
    row = PredictionRun(learner_key=learner_key, exercise_slug=ex.slug, prediction=prediction)
    try:
        sb = sbx.ensure(learner_key)
        row.sandbox_id = sb.id
        lock = sbx.lock_for(sb.id)
        if not lock.acquire(timeout=1):
            raise sbx.SandboxUnavailable("your sandbox is already running something; wait for "
                                         "it to finish", status=409)
        try:
            evidence = _run_in(sb, ex)
        finally:
            lock.release()
    except (sbx.SandboxUnavailable, AdminError) as exc:
        row.status = PredictionRun.Status.FAILED
        row.error = exc.message if isinstance(exc, sbx.SandboxUnavailable) else \
            f"the lab did not answer: {exc.message}"
        row.seconds = round(time.monotonic() - started, 2)
        row.save()
        return row
    records = evidence.pop("_records", [])
    race = evidence.pop("_race", None)
    _score(row, ex, prediction, records, race, None)
    row.evidence = evidence
    row.seconds = round(time.monotonic() - started, 2)
    row.save()
    return row


def _run_in(sb, ex: Exercise) -> dict:
    notes: list[str] = []
    sbx.clear_faults(sb)
    sbx.apply(sb, config_of(ex), fresh_balancers=True)
    waiting = sbx.wait_ready(sb, timeout=6.0)
    if waiting:
        notes.append("not every backend was ready when the exercise started: "
                     + ", ".join(waiting))
    if ex.faults:
        sbx.set_faults(sb, ex.faults)
        notes.append("faults set: " + "; ".join(
            f"{b}: " + ", ".join(f"{k}={v}" for k, v in knobs.items())
            for b, knobs in ex.faults.items()))
    evidence: dict = {"notes": notes, "sandbox": sb.id, "dashboard_url": f"/lab/{sb.id}/"}
    if ex.scenario == "sequence":
        records, timeline = run_sequence(sb, ex)
        diagram = None
        if ex.evidence_diagram and ex.evidence_diagram <= len(records):
            event = records[ex.evidence_diagram - 1].get("event")
            if event:
                diagram = diagrams.request_sequence(event)
        evidence.update(requests=[{k: v for k, v in r.items() if k != "event"} for r in records],
                        timeline=timeline, diagram=diagram,
                        diagram_request=ex.evidence_diagram if diagram else None)
        evidence["_records"] = records
    else:
        race = run_race(sb, ex)
        evidence.update(changes=race["changes"], probes=race["probes"],
                        diagram=race["episode"], diagram_backend=race["first"],
                        faults={b: k for b, k in ex.race.faults.items()})
        evidence["_race"] = race
    return evidence
