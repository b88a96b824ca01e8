"""The site's URLs plus one view that fails, to see the 500 page a visitor gets."""
from django.urls import path

from lblab.urls import urlpatterns as site


def boom(request):
    raise RuntimeError("a bug with a secret in its message: s3cr3t")


urlpatterns = [path("boom/", boom), *site]
