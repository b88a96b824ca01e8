"""Vendor cards: what AWS ALB/NLB, HAProxy, Envoy and NGINX call a concept, and their defaults.

The data is one file, content/vendors.yaml, validated here (unknown keys are errors, every
entry names the documentation it was checked against by title and https URL). A lesson
shows a card with a fenced block

    ```vendors
    health-check-window
    ```

which `block()` turns into HTML. Everything taken from the file is escaped (the note goes
through the course's inline Markdown, which escapes first), so the file cannot inject markup.
"""
from __future__ import annotations

import html
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from explainer.course import markdown

FILE = Path(__file__).resolve().parent / "content" / "vendors.yaml"
VENDORS = ("AWS ALB", "AWS NLB", "HAProxy", "Envoy", "NGINX")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    title: str = Field(min_length=5)
    url: str = Field(pattern=r"^https://[^\s]+$")


class Default(_Strict):
    setting: str = Field(min_length=2)
    value: str = Field(min_length=1)


class Entry(_Strict):
    vendor: str
    calls_it: str = Field(min_length=3)
    defaults: list[Default] = []
    note: str | None = None
    source: Source

    @field_validator("vendor")
    @classmethod
    def _known(cls, value):
        if value not in VENDORS:
            raise ValueError(f"vendor {value!r}: one of {', '.join(VENDORS)}")
        return value


class Card(_Strict):
    id: str = Field(pattern=r"^[a-z0-9-]{2,40}$")
    concept: str
    title: str = Field(min_length=5)
    vendors: list[Entry] = Field(min_length=1)


class CardFile(_Strict):
    cards: list[Card] = Field(min_length=1)


def load(path: Path = FILE) -> tuple[list[Card], list[str]]:
    """(cards, problems); a file with problems gives no cards."""
    where = f"content/{path.name}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        cards = CardFile.model_validate(raw).cards
    except OSError as exc:
        return [], [f"{where}: cannot read: {exc}"]
    except yaml.YAMLError as exc:
        return [], [f"{where}: not valid YAML: {exc}"]
    except ValidationError as exc:
        return [], [f"{where}: {'.'.join(str(p) for p in e['loc'])}: "
                     f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
    ids = [c.id for c in cards]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    return cards, [f"{where}: card id {i!r} is used twice" for i in dup]


def render_card(card: Card) -> str:
    esc = html.escape
    parts = [f'<section class="vendor-card-set" aria-label="What vendors call it: {esc(card.title)}">'
             f'<h3 class="vendor-set-title">In the products: {esc(card.title)}</h3>'
             '<div class="vendor-cards">']
    for entry in card.vendors:
        rows = "".join(f"<dt>{esc(d.setting)}</dt><dd>{esc(d.value)}</dd>" for d in entry.defaults)
        parts.append(
            '<article class="vendor-card">'
            f"<h4>{esc(entry.vendor)}</h4>"
            f'<p class="vendor-term">{esc(entry.calls_it)}</p>'
            + (f"<dl>{rows}</dl>" if rows else "")
            + (f'<p class="vendor-note">{markdown.render_inline(entry.note)}</p>' if entry.note else "")
            + f'<p class="vendor-source">Source: <a href="{esc(entry.source.url, quote=True)}" '
              f'rel="noopener noreferrer" target="_blank">{esc(entry.source.title)}</a></p>'
            "</article>")
    parts.append("</div></section>")
    return "".join(parts)


def block(name: str) -> str | None:
    """HTML for a ```vendors block naming a card, or None when there is no such card."""
    cards, _ = load()
    card = next((c for c in cards if c.id == name.strip()), None)
    return render_card(card) if card else None
