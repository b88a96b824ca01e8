"""Hosting middleware: the client's address for the rate limits, and Problems as answers.

``ProblemMiddleware`` puts the client address in ``labs.services.rates.current_client``
(so a sandbox start deep in a service is counted against it) and turns any ``Problem``
a view lets through into the answer a user can act on: JSON ``{"ok": false, "error",
"errors"}`` for API calls and form posts, the site's own page for a browser's GET, with
the Problem's status (429 and 503 carry ``Retry-After``).
"""
from __future__ import annotations

from django.shortcuts import render

from labs.problems import Problem
from labs.services import rates

TITLES = {403: "Not allowed", 404: "Nothing here", 409: "Not right now",
          429: "Slow down", 503: "The lab is full"}


def wants_json(request) -> bool:
    if request.method != "GET":
        return True
    accept = request.headers.get("Accept", "")
    return (request.path.startswith("/api/") or request.path.endswith((".json", "/status"))
            or ("application/json" in accept and "text/html" not in accept))


def render_problem(request, exc: Problem):
    from explainer.views import problem_response

    if wants_json(request):
        return problem_response(exc)
    retry = getattr(exc, "retry_after", None)
    response = render(request, "lblab_page.html", {
        "status": exc.status, "title": TITLES.get(exc.status, "That did not work"),
        "message": exc.message, "retry_minutes": None}, status=exc.status)
    if retry:
        response["Retry-After"] = str(retry)
    return response


class ProblemMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = rates.current_client.set(rates.client_address(request))
        try:
            return self.get_response(request)
        finally:
            rates.current_client.reset(token)

    def process_exception(self, request, exc):
        if isinstance(exc, Problem):
            return render_problem(request, exc)
        return None
