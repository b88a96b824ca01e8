from django.contrib import admin
from django.urls import include, path

from lblab.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),  # front door and container health checks
    path("", include("explainer.urls")),
    path("admin/", admin.site.urls),
    path("course/", include("explainer.course.urls")),
    path("labs/", include("labs.urls")),
    path("workshops/", include("explainer.workshops.urls")),
]
