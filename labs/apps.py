from django.apps import AppConfig


class LabsConfig(AppConfig):
    name = "labs"
    verbose_name = "LBLab labs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from labs import checks  # noqa: F401 - registers the lab definition check
