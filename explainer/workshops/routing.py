from django.urls import re_path

from explainer.workshops import consumers

websocket_urlpatterns = [
    re_path(r"^ws/workshops/(?P<workshop_id>[0-9]{1,12})/cockpit/$",
            consumers.CockpitConsumer.as_asgi()),
    re_path(r"^ws/workshops/w/(?P<code>[A-Za-z0-9]{1,12})/$", consumers.LearnerConsumer.as_asgi()),
]
