"""ASGI entry point: HTTP goes to Django, WebSockets to the explainer's consumers.

WebSockets are checked against ALLOWED_HOSTS by origin (a page on another site
cannot open a socket to the lab with the learner's cookies) and get the session
user through AuthMiddlewareStack.
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lblab.settings")
# Django must be set up before the consumers (and their models) are imported.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from explainer.routing import websocket_urlpatterns  # noqa: E402
from explainer.workshops.routing import websocket_urlpatterns as workshop_websockets  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter(websocket_urlpatterns + workshop_websockets))
    ),
})
