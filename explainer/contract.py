"""The error contract page: docs/errors.md served inside the site.

Why: the dashboard, the labs and the workshop pages show proxy termination codes ("504 PH",
"(code --)") and the proxy's own error names; a learner who wonders what "PH" means must be
one click from the table that defines it. docs/errors.md is generated from proxy/errors.py
(and kept equal to it by a test), so the page renders that file rather than a copy: one
source, shown everywhere. The course's safe Markdown subset renders it (tables, headings with
ids, so `/errors/#termination-codes` lands on the codes).
"""
from __future__ import annotations

import re

from django.conf import settings
from django.shortcuts import render
from django.utils.safestring import mark_safe

from explainer.course import markdown

ERRORS_MD = settings.BASE_DIR / "docs" / "errors.md"
COMMENT = re.compile(r"<!--.*?-->", re.S)


def contract_html(text: str) -> tuple[str, str]:
    """(title, body HTML) of the error contract: the first `# ` line is the title."""
    text = COMMENT.sub("", text)
    title, body = "Errors and termination codes", text
    first, _, rest = text.lstrip().partition("\n")
    if first.startswith("# "):
        title, body = first[2:].strip(), rest
    return title, markdown.render(body).html


def errors_page(request):
    title, body = contract_html(ERRORS_MD.read_text(encoding="utf-8"))
    return render(request, "explainer/errors.html", {"title": title, "body": mark_safe(body)})
