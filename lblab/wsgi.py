"""WSGI entry point (HTTP only; the live dashboard needs ASGI: daphne lblab.asgi:application)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lblab.settings")
application = get_wsgi_application()
