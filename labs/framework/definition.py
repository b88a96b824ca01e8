"""A lab is a folder; this module reads one into a `Lab` and says what is wrong with it.

Folder layout (``labs/catalog/<slug>/``)::

    lab.yaml        title, concept, story, time_scale, sandbox, traffic, faults, steps,
                    task, targets (numbers the grader uses), lab_settings, answer
    topology.yaml   the starting proxy config (pool backends named like the sandbox's toy
                    backends, b1..bN; the sandbox rewrites every address)
    solution.yaml   the documented fix: a whole config in the same shape (shown on request)
    solution.md     why the fix works
    grader.py       ``grade(run: Recording) -> Result``: a pure function of the recorded run
    *.py            optional: a lab's own locustfile (``traffic.locustfile``)

``load(folder)`` returns ``(lab, problems)``: every problem with its path
(``lab.yaml: faults[2].at: ...``), the same way the proxy reports a config, so the Django
system check (labs/checks.py) can refuse an incomplete lab with all its problems at once.

The learner's document is the proxy config plus, when the lab declares ``lab_settings``,
one extra top-level ``lab:`` mapping for what is not the proxy's business (where the
backends keep sessions, how a deploy proceeds, the answers of a tracing lab). The runner
splits it off before the config goes to the proxy (`split_document`).
"""
from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labs.backend.faults import KNOB_BY_NAME
from labs.framework.timescale import TimeScale
from proxy.durations import parse_duration

CATALOG = Path(__file__).resolve().parents[1] / "catalog"
LOCUST_DIR = Path(__file__).resolve().parents[1] / "locust"
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,60}$")
REQUIRED_FILES = ("lab.yaml", "topology.yaml", "solution.yaml", "solution.md", "grader.py")
# The toy backends' fault knobs, from their own table (labs/backend/faults.py, pure).
FAULT_KNOBS = set(KNOB_BY_NAME)


def _seconds(value: Any) -> float:
    return parse_duration(value)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(Strict):
    title: str = Field(min_length=1)
    text: str = Field(min_length=1)


class Traffic(Strict):
    profile: str | None = None  # labs/locust/<profile>.py
    locustfile: str | None = None  # a file in the lab folder
    users: int = Field(10, ge=1, le=500)
    spawn_rate: float = Field(0, ge=0, le=1000)  # 0: all users at once
    duration: float  # lab seconds
    env: dict[str, str] = {}

    @field_validator("duration", mode="before")
    @classmethod
    def _dur(cls, value):
        return _seconds(value)

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value):
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.profile) == bool(self.locustfile):
            raise ValueError("give exactly one of profile (labs/locust/NAME.py) or locustfile "
                             "(a file in the lab folder)")
        if not 1 <= self.duration <= 120:
            raise ValueError(f"duration must be 1s-120s of lab time, got {self.duration:g}s")
        return self


ADMIN_VERBS = ("drain", "remove", "remove_now", "add", "activate", "maintenance", "weight")


class Fault(Strict):
    """One scheduled action; exactly one of set, clear, crash, restart, admin, note, deploy
    (with ``proxy``: crash, stop or restart that balancer)."""

    at: float
    backend: str | None = None
    # crash or restart a balancer instead (a lab with several: sandbox.proxies names them)
    proxy: str | None = None
    pool: str = "web"
    set: dict[str, Any] | None = None  # PUT /_control/faults
    clear: bool | None = None  # DELETE /_control/faults
    crash: bool | None = None  # POST /_control/crash: the process exits
    stop: bool | None = None  # with proxy: SIGTERM, the balancer drains and exits
    restart: dict[str, Any] | None = None  # start the toy backend again, then these faults
    admin: Literal[ADMIN_VERBS] | None = None  # type: ignore[valid-type]
    weight: int | None = None
    note: str | None = None  # a line in the timeline only
    # A rolling deploy of these backends, following the learner's lab.deploy plan.
    deploy: dict[str, Any] | None = None  # {"backends": [...], "warmup_s": 1}
    # Repeat a `set` every `every` seconds, undoing it after `for` (a periodic spike).
    every: float | None = None
    for_: float | None = Field(None, alias="for")
    until: float | None = None
    label: str | None = None  # what the timeline calls it ("b2 freezes")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("at", "every", "for_", "until", mode="before")
    @classmethod
    def _dur(cls, value):
        return None if value is None else _seconds(value)

    @model_validator(mode="after")
    def _one_action(self):
        given = [k for k in ("set", "clear", "crash", "stop", "restart", "admin", "note",
                             "deploy") if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError("a fault needs exactly one action of set, clear, crash, stop, "
                             f"restart, admin, note, deploy; got {given or 'none'}")
        action = given[0]
        if self.proxy is not None:
            if action not in ("crash", "stop", "restart") or self.backend:
                raise ValueError("proxy: NAME goes with crash, stop or restart only (not "
                                 "with backend)")
        elif action == "stop":
            raise ValueError("stop needs proxy: NAME (a backend stops with crash)")
        elif action in ("set", "clear", "crash", "restart") and not self.backend:
            raise ValueError(f"{action} needs backend: NAME")
        if action == "admin" and not self.backend:
            raise ValueError("admin needs backend: NAME (and pool, default web)")
        if self.admin == "weight" and self.weight is None:
            raise ValueError("admin: weight needs weight: N")
        for knobs in (self.set or {}, self.restart or {}):
            unknown = set(knobs) - FAULT_KNOBS
            if unknown:
                raise ValueError(f"unknown fault knob(s) {', '.join(sorted(unknown))}; known: "
                                 f"{', '.join(sorted(FAULT_KNOBS))}")
        if (self.every is not None or self.for_ is not None) and action != "set":
            raise ValueError("every/for repeat a set: use them with set")
        if self.every is not None and (self.for_ is None or not 0 < self.for_ < self.every):
            raise ValueError("every needs for: a spike shorter than the period")
        return self


class Watcher(Strict):
    """Something that reacts to events while the run goes on (an autoscaler, a load model)."""

    # An autoscaler that replaces a backend the proxy marks unhealthy: remove it from the
    # pool, start the process again (a new instance) with these faults, add it back.
    replace_when_unhealthy: dict[str, Any] | None = None  # {"backend", "pool", "faults"}
    # A deep health check whose latency follows the load: every 100 ms each backend gets
    # health_latency_ms = base_ms + ms_per_rps * (its requests per second).
    load_coupled_health: dict[str, Any] | None = None  # {"base_ms", "ms_per_rps", "backends"}
    # Two balancers and a floating address (labs/framework/pair.py): the standby watches
    # the active's heartbeat and binds the address when it stops answering.
    floating_address: dict[str, Any] | None = None  # {"address", "active", "standby", "listener"}
    # DNS round robin over the balancers' own addresses, with health checks: the zone
    # the traffic's resolver reads (labs/framework/pair.py).
    dns_round_robin: dict[str, Any] | None = None  # {"nodes", "check_interval_s", "fall"}
    # A shared load report: every refresh_s the balancers' requests in flight, pushed to
    # every balancer (PUT /pools/POOL/load; balancer.load: reported reads it).
    load_report: dict[str, Any] | None = None  # {"pool", "refresh_s", "sample_s"}
    # A canary rollout (labs/framework/canary.py): the backend's share of the traffic
    # steps up through `steps` (percent) every `step_s` lab seconds, rolled back when the
    # learner's lab.canary rule says so.
    canary: dict[str, Any] | None = None  # {"backend", "pool", "steps", "step_s"}

    @model_validator(mode="after")
    def _one(self):
        kinds = ("replace_when_unhealthy", "load_coupled_health", "canary", "floating_address",
                 "dns_round_robin", "load_report")
        given = [k for k in kinds if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a watcher is one of {', '.join(kinds)}")
        if self.canary is not None:
            self.canary_plan()  # a bad plan is the lab's problem, found when it loads
        return self

    def canary_plan(self):
        """The rollout this canary watcher runs (labs/framework/canary.py)."""
        from labs.framework.canary import Plan

        spec = self.canary or {}
        unknown = set(spec) - {"backend", "pool", "steps", "step_s", "start_s"}
        if unknown or "backend" not in spec:
            raise ValueError("canary: give backend, and optionally pool, steps, step_s, "
                             f"start_s (got {', '.join(sorted(spec)) or 'nothing'})")
        return Plan(canary=spec["backend"], pool=spec.get("pool", "web"),
                    steps=tuple(spec.get("steps", (1, 5, 25))),
                    step_s=float(spec.get("step_s", 1.5)),
                    start_s=float(spec.get("start_s", 0)))


class App(Strict):
    """Run another server instead of a toy backend on that backend's port: gunicorn, or
    the toy backend itself in another mode (``kind: toy, mode: grpc|udp``)."""

    kind: Literal["gunicorn", "toy"]
    mode: Literal["http", "grpc", "udp"] = "http"  # kind toy: python -m labs.backend --mode
    # kind toy, mode http: serve TLS with this lab-PKI certificate (proxy/pki.py): "own"
    # for the backend's own (b1's names b1), or a stem such as "wrong-selfsigned" (the
    # right names from an issuer nobody trusts: an impostor). The control port stays HTTP.
    tls: Literal["own", "wrong-selfsigned", "wrong-name"] | None = None
    keepalive: int = Field(2, ge=1, le=75)  # gunicorn --keep-alive (whole seconds)
    threads: int = Field(4, ge=1, le=64)
    workers: int = Field(1, ge=1, le=8)
    # One-way latency of the link in front of it (labs/framework/netdelay.py): on one
    # machine the network is microseconds, a real one is not.
    link_delay_ms: float = Field(0, ge=0, le=500)

    @model_validator(mode="after")
    def _tls_on_toy_http(self):
        if self.tls is not None and (self.kind != "toy" or self.mode != "http"):
            raise ValueError("tls is for kind: toy, mode: http (a toy backend serving HTTPS)")
        return self


class SandboxSpec(Strict):
    backends: int | list[str] = 4
    redis: bool = False  # only a default: lab_settings.sessions may change it
    apps: dict[str, App] = {}
    # Server names the lab PKI must hold a certificate for (TLS labs; proxy/pki.py).
    pki: list[str] = []
    # Several balancers over the same backends: their names (the first is the sandbox's
    # proxy part); each gets the learner's config on ports of its own. []: one proxy.
    proxies: list[str] = []
    # Ports no part binds at start, for a floating address one balancer at a time holds.
    floating: list[str] = []

    @model_validator(mode="after")
    def _names(self):
        if len(self.proxies) == 1:
            raise ValueError("proxies: name two or more (one proxy needs no list)")
        if len(set(self.proxies)) != len(self.proxies):
            raise ValueError("proxies: give each balancer its own name")
        return self


class LabSetting(Strict):
    help: str
    default: Any
    choices: list[Any] | None = None
    # A toy backend fault knob this setting sets on every toy backend before the traffic
    # (e.g. how an overloaded server sheds: lab.overload -> the knob `shed`).
    backend_knob: str | None = None
    # For a mapping setting: the bounds of its numbers, {key: [low, high]} (inclusive).
    limits: dict[str, tuple[float, float]] = {}

    @field_validator("backend_knob")
    @classmethod
    def _known_knob(cls, value):
        if value is not None and value not in FAULT_KNOBS:
            raise ValueError(f"backend_knob: unknown fault knob {value!r}; known: "
                             f"{', '.join(sorted(FAULT_KNOBS))}")
        return value


class Answer(Strict):
    """What a tracing lab asks: for each incident, one value per field from its choices."""

    incidents: dict[str, str]  # label -> what the page says about it ("between 1 s and 2 s")
    fields: dict[str, list[Any]]  # field -> allowed values


class LabFile(Strict):
    title: str = Field(min_length=3)
    concept: str = Field(min_length=3)
    # Slugs from labs/framework/concepts.py: what the lab list filters on.
    concepts: list[str] = []
    story: str = Field(min_length=20)
    order: int = 100
    time_scale: float = 1
    difficulty: Literal["introductory", "intermediate", "advanced"] = "intermediate"
    minutes: int = Field(20, ge=5, le=180)  # a learner's time for the lab, reading included
    sandbox: SandboxSpec = SandboxSpec()
    traffic: Traffic
    faults: list[Fault] = []
    watchers: list[Watcher] = []
    settle: float = 8.0  # lab seconds to wait for the pool to be ready before traffic
    steps: list[Step] = Field(min_length=1)
    task: str = Field(min_length=10)
    targets: dict[str, Any] = {}
    lab_settings: dict[str, LabSetting] = {}
    answer: Answer | None = None
    needs: list[str] = []  # capabilities: "tcp_listeners", "tls"

    @field_validator("settle", mode="before")
    @classmethod
    def _dur(cls, value):
        return _seconds(value)

    @field_validator("concepts")
    @classmethod
    def _known_concepts(cls, value):
        from labs.framework.concepts import CONCEPTS

        unknown = [c for c in value if c not in CONCEPTS]
        if unknown:
            raise ValueError(f"unknown concept(s) {', '.join(unknown)}; known: "
                             f"{', '.join(CONCEPTS)} (labs/framework/concepts.py)")
        return list(dict.fromkeys(value))

    @field_validator("time_scale")
    @classmethod
    def _scale(cls, value):
        TimeScale(value)  # raises with the message
        return value


@dataclass
class Lab:
    slug: str
    folder: Path
    spec: LabFile
    topology: dict
    solution: dict
    solution_md: str
    grader: ModuleType | None = field(default=None, repr=False)

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def scale(self) -> TimeScale:
        return TimeScale(self.spec.time_scale)

    @property
    def proxy_names(self) -> list[str]:
        """The balancers by the lab's names; [] for the usual one-proxy sandbox."""
        return list(self.spec.sandbox.proxies)

    @property
    def backend_names(self) -> list[str]:
        b = self.spec.sandbox.backends
        return [f"b{i}" for i in range(1, b + 1)] if isinstance(b, int) else list(b)

    def topology_text(self) -> str:
        return (self.folder / "topology.yaml").read_text(encoding="utf-8")

    def solution_text(self) -> str:
        return (self.folder / "solution.yaml").read_text(encoding="utf-8")

    def locustfile(self) -> Path:
        t = self.spec.traffic
        if t.locustfile:
            return self.folder / t.locustfile
        return LOCUST_DIR / f"{t.profile}.py"

    def grade(self, recording):
        return self.grader.grade(recording)

    @property
    def run_seconds(self) -> int:
        """About how long one run takes on the clock: the traffic plus starting the sandbox,
        letting the pool settle and grading (a few seconds)."""
        return int(round(self.spec.traffic.duration + 6))

    def summary(self) -> dict:
        return {"slug": self.slug, "title": self.title, "concept": self.spec.concept,
                "order": self.spec.order, "time_scale": self.scale.to_json(),
                "difficulty": self.spec.difficulty, "minutes": self.spec.minutes,
                "concepts": list(self.spec.concepts),
                "needs": list(self.spec.needs)}


def _format_loc(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# libyaml when the wheel has it: the system check reads every lab at each start.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path, problems: list[str]) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        return None
    except yaml.YAMLError as exc:
        problems.append(f"{path.name}: not valid YAML: {exc}")
        return None


def _load_grader(folder: Path, slug: str, problems: list[str]) -> ModuleType | None:
    path = folder / "grader.py"
    if not path.exists():
        return None
    name = f"labs.catalog.{slug.replace('-', '_')}.grader"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken grader is a problem of the lab, reported with the rest
        sys.modules.pop(name, None)
        problems.append(f"grader.py: cannot be imported: {type(exc).__name__}: {exc}")
        return None
    if not callable(getattr(module, "grade", None)):
        problems.append("grader.py: defines no grade(run) function")
    return module


def check_config(data: Any) -> list[str]:
    from proxy.config import ConfigError, parse_config

    try:
        parse_config(data)
    except ConfigError as exc:
        return exc.lines()
    return []


def split_document(doc: Any) -> tuple[Any, dict]:
    """(proxy config, lab settings) from the learner's document."""
    if isinstance(doc, dict) and "lab" in doc:
        doc = dict(doc)
        settings = doc.pop("lab") or {}
        return doc, settings if isinstance(settings, dict) else {"__invalid__": settings}
    return doc, {}


def check_settings(lab_file: LabFile, settings: dict) -> list[tuple[str, str]]:
    """Problems of the ``lab:`` part of a learner's document, as (path, message)."""
    errors = []
    if "__invalid__" in settings:
        return [("lab", "must be a mapping of this lab's settings")]
    declared = lab_file.lab_settings
    for key, value in settings.items():
        if key not in declared:
            known = ", ".join(declared) or "none (this lab has no lab: settings)"
            errors.append((f"lab.{key}", f"unknown lab setting; this lab has: {known}"))
            continue
        setting = declared[key]
        if key == "answers" and lab_file.answer is not None:
            errors += check_answers(lab_file.answer, value)
            continue
        if setting.choices is not None and value not in setting.choices:
            errors.append((f"lab.{key}", f"choose one of {', '.join(map(str, setting.choices))}; "
                           f"got {value!r}"))
        elif isinstance(setting.default, dict):
            if not isinstance(value, dict):
                errors.append((f"lab.{key}", "must be a mapping"))
                continue
            for sub, v in value.items():
                if sub not in setting.default:
                    errors.append((f"lab.{key}.{sub}", "unknown key; known: "
                                   + ", ".join(setting.default)))
                elif not _same_kind(setting.default[sub], v):
                    errors.append((f"lab.{key}.{sub}", f"expected a value like "
                                   f"{setting.default[sub]!r}, got {v!r}"))
                elif sub in setting.limits and not (
                        setting.limits[sub][0] <= v <= setting.limits[sub][1]):
                    low, high = setting.limits[sub]
                    errors.append((f"lab.{key}.{sub}", f"must be from {low:g} to {high:g}, "
                                   f"got {v!r}"))
    return errors


def check_answers(answer: "Answer", value: Any) -> list[tuple[str, str]]:
    """A tracing lab's answers: {incident: {field: value}}, each value from its choices
    (a field may be left out or "?" while the learner has not decided)."""
    if not isinstance(value, dict):
        return [("lab.answers", "give one entry per incident: " + ", ".join(answer.incidents))]
    errors = []
    for incident, fields in value.items():
        if incident not in answer.incidents:
            errors.append((f"lab.answers.{incident}", "no such incident; incidents: "
                           + ", ".join(answer.incidents)))
            continue
        if not isinstance(fields, dict):
            errors.append((f"lab.answers.{incident}", "give " + ", ".join(answer.fields)))
            continue
        for name, v in fields.items():
            if name not in answer.fields:
                errors.append((f"lab.answers.{incident}.{name}", "unknown field; fields: "
                               + ", ".join(answer.fields)))
            elif v != "?" and v not in answer.fields[name]:
                errors.append((f"lab.answers.{incident}.{name}", "choose one of "
                               + ", ".join(map(str, answer.fields[name])) + f"; got {v!r}"))
    return errors


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def settings_with_defaults(lab_file: LabFile, settings: dict) -> dict:
    out = {}
    for key, setting in lab_file.lab_settings.items():
        value = settings.get(key, setting.default)
        if isinstance(setting.default, dict) and isinstance(value, dict):
            value = {**setting.default, **value}
        out[key] = value
    return out


def load(folder: Path) -> tuple[Lab | None, list[str]]:
    """Read one lab folder; returns (lab or None, every problem found)."""
    folder = Path(folder)
    slug = folder.name
    problems: list[str] = []
    if not SLUG_RE.match(slug):
        problems.append(f"folder name {slug!r} is not a slug (lowercase letters, digits, '-')")
    for name in REQUIRED_FILES:
        if not (folder / name).exists():
            problems.append(f"{name}: missing (a lab needs {', '.join(REQUIRED_FILES)})")
    raw = _read_yaml(folder / "lab.yaml", problems)
    spec = None
    if raw is not None:
        if not isinstance(raw, dict):
            problems.append("lab.yaml: must be a mapping (title, concept, story, ...)")
        else:
            try:
                spec = LabFile.model_validate(raw)
            except ValidationError as exc:
                for err in exc.errors():
                    msg = err["msg"].removeprefix("Value error, ")
                    if err["type"] == "extra_forbidden":
                        msg = "unknown key"
                    problems.append(f"lab.yaml: {_format_loc(err['loc'])}: {msg}")
    topology = _read_yaml(folder / "topology.yaml", problems)
    solution = _read_yaml(folder / "solution.yaml", problems)
    solution_md = ""
    if (folder / "solution.md").exists():
        solution_md = (folder / "solution.md").read_text(encoding="utf-8")
        if len(solution_md.strip()) < 20:
            problems.append("solution.md: say why the fix works (at least a sentence)")
    for name, doc in (("topology.yaml", topology), ("solution.yaml", solution)):
        if (folder / name).exists() and doc is not None:
            config, settings = split_document(doc)
            for line in check_config(config):
                problems.append(f"{name}: {line}")
            if spec is not None:
                for path, msg in check_settings(spec, settings):
                    problems.append(f"{name}: {path}: {msg}")
        elif (folder / name).exists():
            problems.append(f"{name}: empty")
    if spec is not None:
        names = ([f"b{i}" for i in range(1, spec.sandbox.backends + 1)]
                 if isinstance(spec.sandbox.backends, int) else list(spec.sandbox.backends))
        t = spec.traffic
        if t.locustfile and not (folder / t.locustfile).exists():
            problems.append(f"lab.yaml: traffic.locustfile: {t.locustfile} is not in the folder")
        if t.profile and not (LOCUST_DIR / f"{t.profile}.py").exists():
            problems.append(f"lab.yaml: traffic.profile: no labs/locust/{t.profile}.py")
        for i, fault in enumerate(spec.faults):
            if fault.backend and fault.backend not in names:
                problems.append(f"lab.yaml: faults[{i}].backend: {fault.backend!r} is not a "
                                f"backend of this lab's sandbox ({', '.join(names)})")
            if fault.at > t.duration:
                problems.append(f"lab.yaml: faults[{i}].at: {fault.at:g}s is after the traffic "
                                f"ends ({t.duration:g}s)")
        for name in spec.sandbox.apps:
            if name not in names:
                problems.append(f"lab.yaml: sandbox.apps.{name}: not a backend of this lab")
        if spec.answer is None and "answers" in spec.lab_settings:
            problems.append("lab.yaml: lab_settings.answers needs an answer: section")
    grader = _load_grader(folder, slug, problems) if (folder / "grader.py").exists() else None
    if problems or spec is None:
        return None, problems
    return Lab(slug=slug, folder=folder, spec=spec, topology=topology, solution=solution,
               solution_md=solution_md, grader=grader), []
