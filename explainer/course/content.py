"""The course's content: files under explainer/course/content/, read and checked once.

Layout (an instructor edits these; nothing here is code):

    content/lessons/NN-slug.md   front matter (YAML between --- lines) + Markdown body
    content/presets/NAME.yaml    proxy configs a lesson may use instead of an example
    content/drills/TOPIC.yaml    interview questions: {drills: [...]}
    content/predict/SLUG.yaml    predict-then-observe exercises, run in the learner's sandbox
                                 (or, scenario simulation, computed by a model in simulations.py)

`catalog()` returns every lesson, drill and exercise, validated with pydantic (unknown
keys are errors, as in the proxy's config) and then checked across files
(`problems()`): a lesson's labs exist in the labs registry when it is importable, its
preset passes the proxy's own validation (proxy.config.parse_config) and fits a
learner's sandbox (one listener, backends b1..b4), every check question has an answer
among its choices, every diagram it names exists, every exercise's prediction fields
read an observation its scenario makes. The Django system check (course.W001, see
checks.py) and the tests report the same list, with the file and the path of each
problem. A file with problems is left out, so one bad file cannot take the course down.
"""
from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONTENT = Path(__file__).resolve().parent / "content"
REPO = Path(__file__).resolve().parents[2]
SLUG = r"^[a-z0-9][a-z0-9-]{1,60}$"
LEVELS = ("junior", "mid", "senior", "staff")
SANDBOX_BACKENDS = ("b1", "b2", "b3", "b4")
# Diagrams the site generates for ```diagram blocks (see selectors.diagram_source).
GENERATED_DIAGRAMS = ("health_table", "ejection_table", "intent_table", "lifecycle",
                      "preset_topology")
TOPICS = {
    "fundamentals": "Fundamentals",
    "l4-l7": "L4 and L7",
    "algorithms": "Algorithms",
    "hashing": "Hashing",
    "health": "Health checks",
    "stickiness": "Stickiness and sessions",
    "draining": "Draining and timeouts",
    "tls": "TLS",
    "errors": "Reading errors",
    "ha": "High availability",
    "design": "System design",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- lessons

class Choice(Strict):
    id: str = Field(pattern=r"^[a-z0-9_-]{1,20}$")
    text: str = Field(min_length=1)
    why: str | None = None  # feedback when this choice is picked (optional)


class Check(Strict):
    """A check question answered in the lesson page and graded on the server."""

    id: str = Field(pattern=r"^[a-z0-9_-]{1,40}$")
    prompt: str = Field(min_length=10)
    kind: Literal["single", "multi", "number"] = "single"
    choices: list[Choice] = []
    answer: Union[str, list[str], float, None] = None
    tolerance: float = Field(0, ge=0)
    unit: str = ""
    explanation: str = Field(min_length=20)

    @model_validator(mode="after")
    def _answer_fits(self):
        ids = [c.id for c in self.choices]
        if len(set(ids)) != len(ids):
            raise ValueError("choice ids must be unique")
        if self.answer is None:
            raise ValueError("a check question needs an answer")
        if self.kind == "number":
            if self.choices:
                raise ValueError("a number question has no choices")
            if isinstance(self.answer, (list, str)) or isinstance(self.answer, bool):
                raise ValueError("the answer of a number question is a number")
            return self
        if len(self.choices) < 2:
            raise ValueError(f"a {self.kind} question needs at least two choices")
        if self.kind == "single":
            if not isinstance(self.answer, str) or self.answer not in ids:
                raise ValueError(f"answer must be one of the choice ids ({', '.join(ids)}), "
                                 f"got {self.answer!r}")
        else:
            answers = self.answer if isinstance(self.answer, list) else [self.answer]
            if not answers or any(a not in ids for a in answers):
                raise ValueError(f"answer must list choice ids from {', '.join(ids)}, "
                                 f"got {self.answer!r}")
        return self

    @property
    def answers(self) -> list[str]:
        return self.answer if isinstance(self.answer, list) else [self.answer]  # type: ignore

    def choice(self, cid: str) -> Choice | None:
        return next((c for c in self.choices if c.id == cid), None)


class LiveTraffic(Strict):
    """What "send sample requests" sends through the learner's proxy."""

    count: int = Field(12, ge=1, le=60)
    paths: list[str] = ["/"]  # taken in turn
    clients: list[str] = []  # source addresses (127.x.y.z) taken in turn
    headers: list[dict[str, str]] = []  # header sets taken in turn
    cookie_jar: bool = False  # each client keeps the cookies it is given

    @field_validator("paths")
    @classmethod
    def _paths(cls, value):
        if not value or any(not p.startswith("/") for p in value):
            raise ValueError("paths: give at least one path, each starting with /")
        return value

    @field_validator("clients")
    @classmethod
    def _loopback(cls, value):
        for ip in value:
            if not re.match(r"^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$", ip):
                raise ValueError(f"{ip!r}: clients are 127.x.y.z addresses (loopback only)")
        return value


class LessonMeta(Strict):
    slug: str = Field(pattern=SLUG)
    title: str = Field(min_length=3)
    order: int
    summary: str = Field(min_length=20)
    minutes: int = Field(15, ge=1, le=120)
    topics: list[str] = Field(min_length=1)
    labs: list[str] = []
    preset: str  # proxy/examples/NAME.yaml or presets/NAME.yaml
    preset_note: str = Field(min_length=20)
    live_traffic: LiveTraffic = LiveTraffic()
    predict: list[str] = []
    concepts: dict[str, Union[str, list[str]]] = {}  # concept id -> the section(s) teaching it
    checks: list[Check] = Field(min_length=2)

    @field_validator("topics")
    @classmethod
    def _topics(cls, value):
        unknown = [t for t in value if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topic(s) {', '.join(unknown)}; topics: {', '.join(TOPICS)}")
        return value

    @model_validator(mode="after")
    def _unique_checks(self):
        ids = [c.id for c in self.checks]
        if len(set(ids)) != len(ids):
            raise ValueError("check ids must be unique within a lesson")
        return self


@dataclass
class Lesson:
    meta: LessonMeta
    body: str
    path: Path
    preset_config: dict = field(default_factory=dict)

    def __getattr__(self, name):  # slug, title, checks... read through to the front matter
        if name in ("meta", "body", "path", "preset_config"):
            raise AttributeError(name)
        return getattr(self.meta, name)

    def check(self, qid: str) -> Check | None:
        return next((c for c in self.meta.checks if c.id == qid), None)


# ---------------------------------------------------------------- drills

class RubricPoint(Strict):
    id: str = Field(pattern=r"^[a-z0-9_-]{1,40}$")
    text: str = Field(min_length=5)


class Drill(Strict):
    slug: str = Field(pattern=SLUG)
    level: Literal["junior", "mid", "senior", "staff"]
    topics: list[str] = Field(min_length=1)
    question: str = Field(min_length=15)
    model_answer: str = Field(min_length=80)
    rubric: list[RubricPoint] = Field(min_length=3)
    follow_up: str | None = None
    lesson: str | None = None
    concepts: list[str] = []

    @field_validator("topics")
    @classmethod
    def _topics(cls, value):
        unknown = [t for t in value if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topic(s) {', '.join(unknown)}; topics: {', '.join(TOPICS)}")
        return value

    @model_validator(mode="after")
    def _unique_points(self):
        ids = [p.id for p in self.rubric]
        if len(set(ids)) != len(ids):
            raise ValueError("rubric point ids must be unique")
        return self


class DrillFile(Strict):
    drills: list[Drill] = Field(min_length=1)


# ---------------------------------------------------------------- predict then observe

class Option(Strict):
    value: str
    label: str


class PredictField(Strict):
    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    kind: Literal["sequence", "choice", "number"]
    label: str = Field(min_length=5)
    options: list[Union[str, Option]] = []
    count: int | None = Field(None, ge=1, le=40)
    observe: str  # an observation of the scenario (see predict.OBSERVATIONS)
    tolerance: float = Field(0, ge=0)  # number: absolute
    tolerance_pct: float = Field(0, ge=0, le=100)  # number: relative to the observed value
    unit: str = ""

    @model_validator(mode="after")
    def _shape(self):
        if self.kind in ("sequence", "choice") and len(self.options) < 2:
            raise ValueError(f"a {self.kind} field needs at least two options")
        if self.kind == "sequence" and not self.count:
            raise ValueError("a sequence field needs count")
        if self.kind == "number" and not (self.tolerance or self.tolerance_pct):
            raise ValueError("a number field needs tolerance and/or tolerance_pct")
        return self

    def option_values(self) -> list[str]:
        return [o.value if isinstance(o, Option) else str(o) for o in self.options]

    def option_pairs(self) -> list[tuple[str, str]]:
        return [(o.value, o.label) if isinstance(o, Option) else (str(o), str(o))
                for o in self.options]

    def label_of(self, value: str) -> str:
        return dict(self.option_pairs()).get(value, value)


class RequestSpec(Strict):
    path: str = "/"
    method: Literal["GET", "POST", "HEAD"] = "GET"
    headers: dict[str, str] = {}
    jar: bool = False  # send back the cookies this client was given
    timeout: float = Field(6.0, gt=0, le=15)


class Step(Strict):
    """One step of a sequence scenario: requests, or a change to the running lab."""

    request: RequestSpec | None = None
    repeat: int = Field(1, ge=1, le=60)
    clients: list[str] = []  # one request per client address (127.x), in this order
    tag: str | None = None
    background: bool = False  # do not wait for the answer (joined at the end)
    action: Literal["drain", "maintenance", "activate"] | None = None
    backend: str | None = None
    balancer: dict[str, Any] | None = None  # PUT /pools/web/balancer
    faults: dict[str, dict[str, Any]] | None = None  # backend -> knobs
    sleep: float | None = Field(None, ge=0, le=5)
    say: str | None = None  # how the page describes this step (when the default would give away an answer)

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("request", "action", "balancer", "faults", "sleep")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a step is exactly one of request, action, balancer, faults, "
                             f"sleep; got {given or 'none'}")
        if self.action and self.backend not in SANDBOX_BACKENDS:
            raise ValueError(f"action {self.action} needs backend: one of "
                             f"{', '.join(SANDBOX_BACKENDS)}")
        for ip in self.clients:
            if not re.match(r"^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$", ip):
                raise ValueError(f"{ip!r}: clients are 127.x.y.z addresses")
        if self.clients and self.repeat != 1:
            raise ValueError("give clients or repeat, not both")
        return self


class ConfigSpec(Strict):
    base: str  # proxy/examples/NAME.yaml or presets/NAME.yaml
    replace: dict[str, Any] = {}  # top-level keys replaced whole (routes, pools)
    merge: dict[str, Any] = {}  # deep-merged (mappings merge, anything else replaces)
    pool: dict[str, Any] = {}  # deep-merged into pools.web
    backends: dict[str, dict[str, Any]] = {}  # pools.web backends patched by name


class RaceSpec(Strict):
    faults: dict[str, dict[str, Any]] = Field(min_length=1)  # set at the same moment
    watch: list[str] = Field(min_length=1)
    timeout: float = Field(4.0, gt=0, le=10)


class SimulationSpec(Strict):
    """A model from explainer/course/simulations.py, run once per case with these params."""

    model: Literal["dsr_bytes", "alb_vs_nlb", "balls_into_bins", "maglev_disruption",
                   "flapping"]
    cases: dict[str, dict[str, Any]] = Field(min_length=1)  # case name -> keyword arguments

    @field_validator("cases")
    @classmethod
    def _case_names(cls, value):
        for name in value:
            if not re.match(r"^[a-z0-9_]{1,30}$", name):
                raise ValueError(f"case {name!r}: use lower-case letters, digits and _")
        return value


class Exercise(Strict):
    slug: str = Field(pattern=SLUG)
    title: str = Field(min_length=5)
    level: Literal["junior", "mid", "senior", "staff"]
    topic: str
    lesson: str | None = None
    concepts: list[str] = []
    summary: str = Field(min_length=20)
    story: str = Field(min_length=20)
    scenario: Literal["sequence", "health_race", "simulation"]
    config: ConfigSpec | None = None  # every scenario but simulation runs a proxy config
    simulation: SimulationSpec | None = None
    faults: dict[str, dict[str, Any]] = {}  # set before the steps
    steps: list[Step] = []
    race: RaceSpec | None = None
    predict: list[PredictField] = Field(min_length=1)
    explanation: str = Field(min_length=40)
    evidence_diagram: int | None = None  # request number whose path is drawn

    @model_validator(mode="after")
    def _scenario(self):
        if self.scenario == "sequence" and not self.steps:
            raise ValueError("a sequence scenario needs steps")
        if self.scenario == "health_race" and self.race is None:
            raise ValueError("a health_race scenario needs race")
        if self.scenario == "simulation":
            if self.simulation is None:
                raise ValueError("a simulation scenario needs simulation")
            if self.config is not None or self.steps or self.race or self.faults:
                raise ValueError("a simulation runs no proxy: leave out config, steps, race "
                                 "and faults")
        elif self.config is None:
            raise ValueError(f"a {self.scenario} scenario needs config")
        if self.topic not in TOPICS:
            raise ValueError(f"unknown topic {self.topic!r}")
        ids = [f.id for f in self.predict]
        if len(set(ids)) != len(ids):
            raise ValueError("prediction field ids must be unique")
        return self

    def field(self, fid: str) -> PredictField | None:
        return next((f for f in self.predict if f.id == fid), None)


# ---------------------------------------------------------------- concepts

class Concept(Strict):
    id: str = Field(pattern=r"^[a-z0-9-]{2,40}$")
    title: str = Field(min_length=3)


class ConceptFile(Strict):
    concepts: list[Concept] = Field(min_length=1)
    labs: dict[str, list[str]] = {}  # graded lab slug -> the concepts it grades


def _load_concepts(problems: list[str]) -> ConceptFile:
    where = "concepts.yaml"
    try:
        data = ConceptFile.model_validate(yaml.safe_load(
            (CONTENT / "concepts.yaml").read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"{where}: {exc}")
        return ConceptFile(concepts=[Concept(id="none", title="none")])
    except ValidationError as exc:
        problems.extend(_pydantic(exc, where))
        return ConceptFile(concepts=[Concept(id="none", title="none")])
    ids = [c.id for c in data.concepts]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"{where}: concept {dup!r} is listed twice")
    for lab, named in data.labs.items():
        for cid in named:
            if cid not in ids:
                problems.append(f"{where}: labs.{lab}: unknown concept {cid!r}")
    return data


# ---------------------------------------------------------------- reading files

@dataclass
class Catalog:
    lessons: list[Lesson]
    drills: list[Drill]
    exercises: list[Exercise]
    problems: list[str]
    exercise_configs: dict[str, dict] = field(default_factory=dict)
    concepts: list[Concept] = field(default_factory=list)
    lab_concepts: dict[str, list[str]] = field(default_factory=dict)

    def lesson(self, slug: str) -> Lesson | None:
        return next((x for x in self.lessons if x.slug == slug), None)

    def drill(self, slug: str) -> Drill | None:
        return next((x for x in self.drills if x.slug == slug), None)

    def exercise(self, slug: str) -> Exercise | None:
        return next((x for x in self.exercises if x.slug == slug), None)


def _where(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "union[", "list[", "str", "float", "int")) \
                or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic(exc: ValidationError, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        loc = _where(err["loc"])
        out.append(f"{where}: {loc + ': ' if loc else ''}{msg}")
    return out


def split_front_matter(text: str) -> tuple[Any, str]:
    """(front matter mapping, Markdown body); raises ValueError when the first line is not ---."""
    if not text.startswith("---"):
        raise ValueError("a lesson starts with front matter between two --- lines")
    end = re.search(r"^---\s*$", text[3:], re.MULTILINE)
    if end is None:
        raise ValueError("the front matter has no closing --- line")
    raw = text[3:3 + end.start()]
    body = text[3 + end.end():]
    return yaml.safe_load(raw), body.lstrip("\n")


def preset_path(ref: str) -> Path:
    """Where a preset reference points: proxy/examples/x.yaml (repo) or presets/x.yaml (content)."""
    if ref.startswith("presets/"):
        return CONTENT / ref
    return REPO / ref


def load_preset(ref: str) -> dict:
    path = preset_path(ref)
    if not re.match(r"^(proxy/examples|presets)/[A-Za-z0-9_.-]+\.yaml$", ref):
        raise ValueError(f"{ref!r}: use proxy/examples/NAME.yaml or presets/NAME.yaml")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{ref}: not a mapping")
    return data


def config_problems(config: dict) -> list[str]:
    """The proxy's verdict, and whether the config fits a learner's sandbox."""
    from proxy.config import ConfigError, parse_config

    try:
        parse_config(config)
    except ConfigError as exc:
        return exc.lines()
    problems = []
    listeners = list((config.get("listeners") or {}))
    if len(listeners) != 1:
        problems.append(f"listeners: a sandbox has one listener port; this config has "
                        f"{len(listeners)} ({', '.join(listeners)})")
    elif (config["listeners"][listeners[0]] or {}).get("protocol", "http") != "http":
        problems.append(f"listeners.{listeners[0]}.protocol: the course's sandbox speaks http")
    for pname, pool in (config.get("pools") or {}).items():
        for i, backend in enumerate((pool or {}).get("backends") or []):
            if backend.get("name") not in SANDBOX_BACKENDS:
                problems.append(f"pools.{pname}.backends[{i}].name: a sandbox runs "
                                f"{', '.join(SANDBOX_BACKENDS)}; {backend.get('name')!r} "
                                "would answer nowhere")
    return problems


def deep_merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(spec: ConfigSpec) -> dict:
    """The exercise's proxy config: base, then replace, merge, pool, backends."""
    config = load_preset(spec.base)
    for key, value in spec.replace.items():
        config[key] = copy.deepcopy(value)
    config = deep_merge(config, spec.merge)
    if spec.pool or spec.backends:
        pools = config.setdefault("pools", {})
        if "web" not in pools:
            raise ValueError("config.pool/backends patch pools.web, which this config lacks")
        pools["web"] = deep_merge(pools["web"], spec.pool)
        by_name = {b["name"]: b for b in pools["web"].get("backends") or []}
        for name, patch in spec.backends.items():
            if name not in by_name:
                raise ValueError(f"config.backends.{name}: pools.web has no backend {name!r}")
            by_name[name].update(patch)
    return config


def _known_labs() -> set[str] | None:
    try:
        from labs.framework import registry
    except ImportError:
        return None
    try:
        return {lab.slug for lab in registry.all_labs()}
    except Exception:  # a broken catalog is the labs' problem, reported by their check
        return None


def graded_labs(lesson: Lesson) -> list[str]:
    """The lesson's labs that exist in the labs registry: all a page may promise.

    A slug the registry does not know is reported by the check (`problems()`); the pages
    leave it out rather than link a lab that is not there, and promise no lab at all when
    the registry cannot be read.
    """
    known = _known_labs()
    if known is None:
        return []
    return [slug for slug in lesson.labs if slug in known]


CLAIM = re.compile(r"^> \*\*Claim checked\*\*:?\s*(.*)$")


def claim_blocks(body: str) -> list[tuple[str, str]]:
    """(claim, the quote's text without '> ') for each "Common claim, checked" callout."""
    out: list[tuple[str, str]] = []
    lines = body.splitlines()
    for i, line in enumerate(lines):
        m = CLAIM.match(line)
        if not m:
            continue
        block = []
        for nxt in lines[i + 1:]:
            if not nxt.startswith(">"):
                break
            block.append(nxt[1:].lstrip())
        out.append((m.group(1).strip(), "\n".join(block)))
    return out


def _load_lessons(problems: list[str]) -> list[Lesson]:
    from explainer.course import vendors

    cards, card_problems = vendors.load(CONTENT / "vendors.yaml")
    problems += card_problems
    card_ids = {c.id for c in cards}
    lessons = []
    for path in sorted((CONTENT / "lessons").glob("*.md")):
        where = f"lessons/{path.name}"
        try:
            meta_raw, body = split_front_matter(path.read_text(encoding="utf-8"))
        except (ValueError, yaml.YAMLError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        try:
            meta = LessonMeta.model_validate(meta_raw)
        except ValidationError as exc:
            problems.extend(_pydantic(exc, where))
            continue
        if len(body.strip()) < 200:
            problems.append(f"{where}: the lesson body is (almost) empty")
            continue
        lesson_problems: list[str] = []
        try:
            preset = load_preset(meta.preset)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            lesson_problems.append(f"{where}: preset: {exc}")
            preset = {}
        if preset:
            lesson_problems += [f"{where}: preset {meta.preset}: {p}" for p in config_problems(preset)]
        for name in re.findall(r"^```diagram\s*\n\s*([A-Za-z0-9_]+)", body, re.MULTILINE):
            if name not in GENERATED_DIAGRAMS:
                lesson_problems.append(f"{where}: diagram {name!r} is not one the site draws "
                                       f"({', '.join(GENERATED_DIAGRAMS)})")
        for claim, block in claim_blocks(body):
            if not re.search(r"^\s*Sources?:.*\]\(https?://", block, re.MULTILINE):
                lesson_problems.append(f"{where}: claim {claim!r} has no 'Source: [title](https://...)' "
                                       "line: a checked claim names where its fact comes from")
        for name in re.findall(r"^```vendors\s*\n\s*([A-Za-z0-9_-]+)", body, re.MULTILINE):
            if name not in card_ids:
                lesson_problems.append(f"{where}: vendors card {name!r} is not in content/vendors.yaml "
                                       f"({', '.join(sorted(card_ids)) or 'no cards'})")
        if body.count("```") % 2:
            lesson_problems.append(f"{where}: a ``` fence is not closed")
        problems += lesson_problems
        if not lesson_problems:
            lessons.append(Lesson(meta=meta, body=body, path=path, preset_config=preset))
    slugs = [x.slug for x in lessons]
    for slug in {s for s in slugs if slugs.count(s) > 1}:
        problems.append(f"lessons: slug {slug!r} is used by more than one file")
    return sorted(lessons, key=lambda x: (x.order, x.slug))


def _load_drills(problems: list[str]) -> list[Drill]:
    drills: list[Drill] = []
    for path in sorted((CONTENT / "drills").glob("*.yaml")):
        where = f"drills/{path.name}"
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            drills += DrillFile.model_validate(raw).drills
        except yaml.YAMLError as exc:
            problems.append(f"{where}: not valid YAML: {exc}")
        except ValidationError as exc:
            problems.extend(_pydantic(exc, where))
    slugs = [d.slug for d in drills]
    for slug in sorted({s for s in slugs if slugs.count(s) > 1}):
        problems.append(f"drills: slug {slug!r} is used twice")
    order = {lvl: i for i, lvl in enumerate(LEVELS)}
    return sorted(drills, key=lambda d: (order[d.level], d.topics[0], d.slug))


def _load_exercises(problems: list[str], configs: dict[str, dict]) -> list[Exercise]:
    from explainer.course.services.predict import observation_problem

    exercises = []
    for path in sorted((CONTENT / "predict").glob("*.yaml")):
        where = f"predict/{path.name}"
        try:
            ex = Exercise.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            problems.append(f"{where}: not valid YAML: {exc}")
            continue
        except ValidationError as exc:
            problems.extend(_pydantic(exc, where))
            continue
        mine: list[str] = []
        config: dict = {}
        if ex.config is not None:
            try:
                config = build_config(ex.config)
                mine += [f"{where}: config: {p}" for p in config_problems(config)]
            except (OSError, ValueError, yaml.YAMLError) as exc:
                mine.append(f"{where}: config: {exc}")
        if ex.simulation is not None:
            from explainer.course.services.predict import simulation_problems
            mine += [f"{where}: simulation: {p}" for p in simulation_problems(ex.simulation)]
        for name in list(ex.faults) + list((ex.race.faults if ex.race else {})):
            if name not in SANDBOX_BACKENDS:
                mine.append(f"{where}: faults.{name}: not a sandbox backend")
        for f in ex.predict:
            why = observation_problem(ex, f)
            if why:
                mine.append(f"{where}: predict.{f.id}.observe: {why}")
        problems += mine
        if not mine:
            exercises.append(ex)
            if ex.config is not None:
                configs[ex.slug] = config
    order = {lvl: i for i, lvl in enumerate(LEVELS)}
    return sorted(exercises, key=lambda e: (order[e.level], e.slug))


def _cross(lessons: list[Lesson], drills: list[Drill], exercises: list[Exercise],
           problems: list[str]) -> None:
    labs = _known_labs()
    lesson_slugs = {x.slug for x in lessons}
    exercise_slugs = {x.slug for x in exercises}
    for lesson in lessons:
        where = f"lessons/{lesson.path.name}"
        if labs is not None:
            for slug in lesson.labs:
                if slug not in labs:
                    problems.append(f"{where}: labs: no lab {slug!r} in the labs registry "
                                    f"(labs: {', '.join(sorted(labs))})")
        for slug in lesson.predict:
            if slug not in exercise_slugs:
                problems.append(f"{where}: predict: no exercise {slug!r}")
    for drill in drills:
        if drill.lesson and drill.lesson not in lesson_slugs:
            problems.append(f"drills: {drill.slug}: lesson {drill.lesson!r} does not exist")
    for ex in exercises:
        if ex.lesson and ex.lesson not in lesson_slugs:
            problems.append(f"predict/{ex.slug}.yaml: lesson {ex.lesson!r} does not exist")


def section_headings(body: str) -> list[str]:
    """The text of every level-2 heading of a lesson body (what concepts point at)."""
    return [h.strip() for h in re.findall(r"^## (.+?)\s*#*\s*$", body, re.MULTILINE)]


def _concept_problems(concepts: ConceptFile, lessons: list[Lesson], drills: list[Drill],
                      exercises: list[Exercise], problems: list[str]) -> None:
    """Every declared concept exists, and every section a lesson names is in its body."""
    known = {c.id for c in concepts.concepts}
    from explainer.course import vendors

    for lesson in lessons:
        where = f"lessons/{lesson.path.name}"
        headings = section_headings(lesson.body)
        for cid, sections in lesson.concepts.items():
            if cid not in known:
                problems.append(f"{where}: concepts: unknown concept {cid!r} (see concepts.yaml)")
            for heading in [sections] if isinstance(sections, str) else sections:
                if heading not in headings:
                    problems.append(f"{where}: concepts.{cid}: no section '## {heading}' in the lesson")
    for drill in drills:
        for cid in drill.concepts:
            if cid not in known:
                problems.append(f"drills: {drill.slug}: unknown concept {cid!r}")
    for ex in exercises:
        for cid in ex.concepts:
            if cid not in known:
                problems.append(f"predict/{ex.slug}.yaml: unknown concept {cid!r}")
    cards, _ = vendors.load(CONTENT / "vendors.yaml")
    for card in cards:
        if card.concept not in known:
            problems.append(f"vendors.yaml: card {card.id}: unknown concept {card.concept!r}")
    labs = _known_labs()
    if labs is not None:
        for slug in concepts.labs:
            if slug not in labs:
                problems.append(f"concepts.yaml: labs.{slug}: no such lab in the labs registry")


_lock = threading.Lock()
_cache: Catalog | None = None
_signature: tuple | None = None


def _files_signature() -> tuple:
    """(count, newest mtime) of the content files and presets: changes when one is edited."""
    stamps = [p.stat().st_mtime_ns for p in CONTENT.rglob("*") if p.is_file()]
    return len(stamps), max(stamps, default=0)


def _debug() -> bool:
    try:
        from django.conf import settings
        return bool(settings.DEBUG)
    except Exception:  # used outside Django (a script): no auto-reload
        return False


def load() -> Catalog:
    """Read every file now (no cache)."""
    problems: list[str] = []
    configs: dict[str, dict] = {}
    lessons = _load_lessons(problems)
    drills = _load_drills(problems)
    exercises = _load_exercises(problems, configs)
    concepts = _load_concepts(problems)
    _cross(lessons, drills, exercises, problems)
    _concept_problems(concepts, lessons, drills, exercises, problems)
    return Catalog(lessons, drills, exercises, problems, configs, concepts.concepts, concepts.labs)


def catalog() -> Catalog:
    """The content, read once per process (reload() forgets it).

    With DEBUG on, an edited file is picked up at the next request (an instructor sees
    the change, or its problems, by reloading the page).
    """
    global _cache, _signature
    with _lock:
        if _debug():
            signature = _files_signature()
            if signature != _signature:
                _cache, _signature = None, signature
        if _cache is None:
            _cache = load()
        return _cache


def reload() -> None:
    global _cache
    with _lock:
        _cache = None


def problems() -> list[str]:
    return catalog().problems
