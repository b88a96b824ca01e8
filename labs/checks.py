"""Django system check: a lab whose definition is incomplete is refused (labs.E001).

Adding a lab means adding a folder under labs/catalog/; this check reads every folder the
way the runner does (labs/framework/definition.py) and reports each problem with its file
and path, so `manage.py check` (and every runserver/daphne start) says exactly what to add.
"""
from __future__ import annotations

from django.core.checks import Error, register


@register("labs")
def lab_definitions(app_configs=None, **kwargs):
    from labs.framework import registry

    registry.reload()
    errors = []
    for slug, problems in registry.problems().items():
        for problem in problems:
            errors.append(Error(f"lab {slug}: {problem}",
                                hint="see labs/framework/definition.py for the lab folder format",
                                obj=f"labs/catalog/{slug}", id="labs.E001"))
    return errors
