from django.apps import AppConfig


class CourseConfig(AppConfig):
    name = "explainer.course"
    label = "course"
    verbose_name = "Course: lessons, drills, predict then observe"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from explainer.course import checks  # noqa: F401  (registers course.E001)
