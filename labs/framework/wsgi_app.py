"""A minimal WSGI app for labs that need a real application server behind the proxy.

Lab 14 (the keep-alive race) runs it under gunicorn (gthread workers, ``--keep-alive``)
on a toy backend's port: gunicorn closes idle keep-alive connections after its own
timeout, which is the behaviour the lab is about. It answers like a toy backend where
the lab needs it: ``X-Backend`` names it, ``/health*`` is 200, anything else 200 JSON.
``?ms=N`` sleeps N ms (a thread per request, like any gthread app).
"""
from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs

NAME = os.environ.get("LBLAB_APP_NAME", "app")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    if path.startswith("/health"):
        body = {"status": "alive" if path.endswith("live") else "ready", "backend": NAME}
    else:
        try:
            ms = float(query.get("ms", ["0"])[0])
        except ValueError:
            ms = 0.0
        if ms > 0:
            time.sleep(min(ms, 10_000) / 1000.0)
        body = {"backend": NAME, "path": path, "server": "gunicorn",
                "request_id": environ.get("HTTP_X_REQUEST_ID")}
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data))), ("X-Backend", NAME)])
    return [data]
