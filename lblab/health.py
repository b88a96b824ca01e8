"""GET /healthz: is this site process able to serve? (for the container engine's health checks
and the front door's operators).

It answers 200 with {"ok": true, "checks": {...}} when the database answers a query and, when
there is a shared channel layer (REDIS_URL), Redis answers PING; otherwise 503 with what
failed. Cheap (two round trips), no session, no template: safe to call every few seconds.
"""
from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
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
    checks = {"database": _database(), "redis": _redis()}
    ok = not any(checks.values())
    body = {"ok": ok, "checks": {k: (v or "ok") for k, v in checks.items()
                                 if v or k == "database" or settings.REDIS_URL}}
    return JsonResponse(body, status=200 if ok else 503)
