"""Moved to labs/markdown.py, below both the course and the labs pages (labs must not
import explainer; the labs render a fix's Markdown like a lesson). This name stays an
alias of that module so older imports keep working."""
import sys

from labs import markdown as _moved

sys.modules[__name__] = _moved
