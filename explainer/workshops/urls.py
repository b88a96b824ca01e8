from django.urls import path

from explainer.workshops import views

app_name = "workshops"

urlpatterns = [
    # instructors (Django auth)
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("", views.workshop_list, name="list"),
    path("<int:workshop_id>/", views.cockpit_page, name="cockpit"),
    path("<int:workshop_id>/cockpit.json", views.cockpit_json, name="cockpit-json"),
    path("<int:workshop_id>/present/", views.present_page, name="present"),
    path("<int:workshop_id>/results.csv", views.results_csv, name="results-csv"),
    path("<int:workshop_id>/control/<str:action>", views.control, name="control"),
    path("<int:workshop_id>/learners/<int:participant_id>/", views.learner_detail,
         name="learner-detail"),
    # learners (no account: their session)
    path("join/", views.join, name="join"),
    path("join/<str:code>/", views.join, name="join-code"),
    path("w/<str:code>/", views.learner_page, name="learner"),
    path("w/<str:code>/me.json", views.learner_json, name="learner-json"),
    path("w/<str:code>/sandbox", views.learner_sandbox, name="learner-sandbox"),
    path("w/<str:code>/hand", views.learner_hand, name="learner-hand"),
    path("w/<str:code>/screen/", views.screen, name="screen"),
]
