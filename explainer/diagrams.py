"""Moved to labs/diagrams.py, below both the site and the graders (labs must not import
explainer). This name stays an alias of that module so older imports keep working."""
import sys

from labs import diagrams as _moved

sys.modules[__name__] = _moved
