from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_GET


@require_GET
def healthz(request):
    """For the front door's health checks: the site answers (over plain HTTP too)."""
    return HttpResponse("ok\n", content_type="text/plain")


from lblab.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),  # container health checks (lblab/health.py)
    path("", include("explainer.urls")),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("course/", include("explainer.course.urls")),
    path("labs/", include("labs.urls")),
    path("workshops/", include("explainer.workshops.urls")),
]
