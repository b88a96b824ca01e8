from django.urls import path

from explainer.course import views

app_name = "course"

urlpatterns = [
    path("", views.course_map, name="map"),
    path("lessons/<slug:slug>/", views.lesson, name="lesson"),
    path("lessons/<slug:slug>/check/<slug:question>", views.check_answer, name="check"),
    path("lessons/<slug:slug>/live", views.live_setup, name="live-setup"),
    path("lessons/<slug:slug>/live/send", views.live_send, name="live-send"),
    path("lessons/<slug:slug>/live/recent", views.live_recent, name="live-recent"),
    path("drills/", views.drills, name="drills"),
    path("drills/<slug:slug>/", views.drill, name="drill"),
    path("drills/<slug:slug>/answer", views.drill_answer, name="drill-answer"),
    path("drills/<slug:slug>/grade", views.drill_grade, name="drill-grade"),
    path("predict/", views.predict_index, name="predict-index"),
    path("predict/<slug:slug>/", views.predict, name="predict"),
    path("predict/<slug:slug>/run", views.predict_run, name="predict-run"),
]
