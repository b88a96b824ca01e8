"""Moved to labs/sandbox/admin_client.py, below both the site and the labs (which must not
import explainer). This name stays an alias of that module so older imports keep working."""
import sys

from labs.sandbox import admin_client as _moved

sys.modules[__name__] = _moved
