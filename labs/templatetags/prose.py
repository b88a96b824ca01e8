"""``|paragraphs``: a lab's hard-wrapped prose (story, steps, task) as HTML paragraphs.

Django's ``|linebreaks`` turns every newline into ``<br>``, so text wrapped at 90 columns in
lab.yaml showed as short ragged lines in a wide column. Here a blank line starts a
paragraph and a single newline is a space; the text is escaped first.
"""
from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

register = template.Library()


def to_paragraphs(text: str) -> list[str]:
    """Paragraphs of the text, each with its lines joined by single spaces."""
    blocks = re.split(r"\n\s*\n", (text or "").strip())
    return [" ".join(line.strip() for line in block.splitlines()) for block in blocks
            if block.strip()]


@register.filter
def paragraphs(text: str) -> str:
    return mark_safe("".join(f"<p>{escape(p)}</p>" for p in to_paragraphs(text)))
