from django.apps import AppConfig


class WorkshopsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "explainer.workshops"
    label = "workshops"
    verbose_name = "Workshops: instructor-led cohorts"

    def ready(self):
        # Progress saved by the labs and the course reaches open cockpits at once.
        from explainer.workshops import signals

        signals.connect()
