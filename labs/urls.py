from django.urls import path

from labs import views

app_name = "labs"

urlpatterns = [
    path("", views.lab_list, name="list"),
    path("<slug:slug>/", views.lab_page, name="lab"),
    path("<slug:slug>/validate", views.validate, name="validate"),
    path("<slug:slug>/runs", views.start_run, name="start-run"),
    path("<slug:slug>/solution", views.solution, name="solution"),
    path("<slug:slug>/runs/<str:run_id>/status", views.run_status, name="run-status"),
    path("<slug:slug>/runs/<str:run_id>/answers", views.answers, name="answers"),
    path("<slug:slug>/runs/<str:run_id>/requests/<str:request_id>", views.request_trace,
         name="request-trace"),
    path("<slug:slug>/runs/<str:run_id>/replay", views.replay_form, name="replay"),
    path("<slug:slug>/runs/<str:run_id>/replays/<str:replay_id>", views.replay_result,
         name="replay-result"),
    path("<slug:slug>/runs/<str:run_id>/report.html", views.report_html, name="report-html"),
    path("<slug:slug>/runs/<str:run_id>/report.json", views.report_json, name="report-json"),
]
