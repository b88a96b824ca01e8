"""System check course.W001: every lesson, drill and exercise file is valid.

Runs with `manage.py check`, `migrate`, `runserver` and the launcher, so a broken file
is reported (with its path) when the site starts instead of when a learner opens it.
A warning, not an error: the broken file is left out and the rest of the course (and the
site) still starts; the tests require the shipped content to have no problem at all.
"""
from django.core.checks import Warning, register


@register("course")
def content_check(app_configs=None, **kwargs):
    from explainer.course import content

    content.reload()
    return [Warning(problem, id="course.W001",
                    hint="fix the file under explainer/course/content/ (see content.py)")
            for problem in content.problems()]
