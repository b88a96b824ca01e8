"""The course map's coverage table: each concept × (lesson section, graded piece, drill).

Computed from what the content declares (lesson front matter `concepts`, drills' and
exercises' `concepts`, concepts.yaml's `labs`), never written by hand, so the table cannot
claim what the content does not have. A graded piece is a graded lab that exists in the
labs registry, or a predict-then-observe exercise. A cell with nothing is reported as
missing, to be filled by later work.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from explainer.course import markdown
from explainer.course.content import Catalog, Concept, Drill, Exercise, Lesson


@dataclass
class Section:
    lesson: Lesson
    heading: str

    @property
    def anchor(self) -> str:
        return markdown.slugify(self.heading)


@dataclass
class Row:
    concept: Concept
    sections: list[Section] = field(default_factory=list)
    labs: list[str] = field(default_factory=list)
    exercises: list[Exercise] = field(default_factory=list)
    drills: list[Drill] = field(default_factory=list)

    @property
    def graded(self) -> bool:
        return bool(self.labs or self.exercises)

    @property
    def complete(self) -> bool:
        return bool(self.sections and self.graded and self.drills)


def rows(cat: Catalog, known_labs: set[str] | None) -> list[Row]:
    """One row per concept, in concepts.yaml's order.

    known_labs: the labs registry's slugs (None when it cannot be read: then no lab is
    counted, as graded_labs() promises none).
    """
    out = []
    for concept in cat.concepts:
        row = Row(concept)
        for lesson in cat.lessons:
            sections = lesson.concepts.get(concept.id)
            for heading in [sections] if isinstance(sections, str) else (sections or []):
                row.sections.append(Section(lesson, heading))
        row.labs = [slug for slug, named in cat.lab_concepts.items()
                    if concept.id in named and known_labs is not None and slug in known_labs]
        row.exercises = [ex for ex in cat.exercises if concept.id in ex.concepts]
        row.drills = [d for d in cat.drills if concept.id in d.concepts]
        out.append(row)
    return out


def summary(table: list[Row]) -> dict:
    return {"total": len(table), "complete": sum(1 for r in table if r.complete),
            "no_section": [r.concept.id for r in table if not r.sections],
            "no_graded": [r.concept.id for r in table if not r.graded],
            "no_drill": [r.concept.id for r in table if not r.drills]}
