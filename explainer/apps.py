from django.apps import AppConfig


class ExplainerConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "explainer"
    verbose_name = "Explainer: live dashboard"
