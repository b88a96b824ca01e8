"""GET /healthz: is this site process able to serve? (the front door's and the container
engine's health checks).

It answers 200 ``ok`` when the database answers a query and, when there is a shared channel
layer (REDIS_URL), Redis answers PING; otherwise 503 with one line per failed check. Cheap
(two round trips), no session, no template, plain HTTP allowed even behind TLS
(settings.SECURE_REDIRECT_EXEMPT): safe to call every few seconds.
"""
from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.views.decorators.http import require_GET


def _database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not healthy": report it, do not raise
        return f"database: {exc.__class__.__name__}: {exc}"
    return None


def _redis() -> str | None:
    if not settings.REDIS_URL:
        return None
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"redis: {exc}"
    return None


@require_GET
def healthz(request):
    problems = [p for p in (_database(), _redis()) if p]
    if problems:
        return HttpResponse("".join(f"{p}\n" for p in problems), status=503,
                            content_type="text/plain")
    return HttpResponse("ok\n", content_type="text/plain")
