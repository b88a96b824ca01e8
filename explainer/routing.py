from django.urls import re_path

from explainer import consumers

websocket_urlpatterns = [
    re_path(r"^ws/lab/(?P<sandbox>[A-Za-z0-9][A-Za-z0-9_-]{0,62})/$", consumers.LabConsumer.as_asgi()),
]
