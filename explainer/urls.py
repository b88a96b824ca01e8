from django.urls import path

from explainer import contract, views

app_name = "explainer"

urlpatterns = [
    path("", views.dashboard_page, name="dashboard"),
    path("errors/", contract.errors_page, name="errors"),
    path("lab/<str:sandbox>/", views.dashboard_page, name="sandbox-dashboard"),
    path("lab/<str:sandbox>/replay/", views.replay_window_form, name="replay-window"),
    path("lab/<str:sandbox>/replays/<str:window_id>/<str:replay_id>/",
         views.replay_window_result, name="replay-window-result"),
    path("api/<str:sandbox>/snapshot", views.snapshot, name="snapshot"),
    path("api/<str:sandbox>/requests/<str:request_id>/diagram", views.request_diagram,
         name="request-diagram"),
    path("api/<str:sandbox>/connections/<str:connection_id>/diagram", views.connection_diagram,
         name="connection-diagram"),
    path("api/<str:sandbox>/connections", views.connections, name="connections"),
    path("api/<str:sandbox>/health/<str:pool>/<str:backend>/diagram", views.health_diagram,
         name="health-diagram"),
    path("api/<str:sandbox>/traffic", views.traffic_status, name="traffic-status"),
    path("api/<str:sandbox>/parts", views.part_status, name="part-status"),
    path("api/<str:sandbox>/control/<str:action>", views.control, name="control"),
]
