from django.contrib import admin
from django.urls import include, path

from lblab.health import healthz

urlpatterns = [
    # Health checks (the container engine, the front door): lblab/health.py. Exempt from
    # the HTTPS redirect (settings.SECURE_REDIRECT_EXEMPT): probes speak plain HTTP.
    path("healthz", healthz, name="healthz"),
    path("", include("explainer.urls")),
    path("admin/", admin.site.urls),
    path("course/", include("explainer.course.urls")),
    path("labs/", include("labs.urls")),
    path("workshops/", include("explainer.workshops.urls")),
]
