"""Public mode: the settings a cohort's server runs with, and what a visitor sees on errors.

Settings are read once at import, so each mode is looked at in a fresh interpreter with
its environment, as ``manage.py lab --public`` or compose starts it.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
SHOW = ("import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k, None) for k in ['DEBUG', 'SECRET_KEY', "
        "'ALLOWED_HOSTS', 'CSRF_TRUSTED_ORIGINS', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', "
        "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'LBLAB_DEFAULT_SANDBOX_WRITERS', "
        "'LBLAB_RATE_SESSIONS', 'LBLAB_RATE_STARTS']}))")


def run(env: dict, *argv: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DEBUG", "SECRET_KEY", "LBLAB_PUBLIC", "LBLAB_TLS", "ALLOWED_HOSTS")}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**clean, "DJANGO_SETTINGS_MODULE": "lblab.settings", **env},
                          timeout=60)


def settings_in(env: dict) -> dict:
    out = run(env, "-c", SHOW)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_public_mode_settings(tmp_path):
    env = {"LBLAB_PUBLIC": "1", "LBLAB_STATE_DIR": str(tmp_path),
           "ALLOWED_HOSTS": "lab.example.org", "CSRF_TRUSTED_ORIGINS": "https://lab.example.org"}
    first = settings_in(env)
    assert first["DEBUG"] is False
    assert first["ALLOWED_HOSTS"] == ["lab.example.org"]
    assert first["CSRF_TRUSTED_ORIGINS"] == ["https://lab.example.org"]
    assert first["SESSION_COOKIE_SECURE"] and first["CSRF_COOKIE_SECURE"]
    assert first["SECURE_SSL_REDIRECT"] and first["SECURE_HSTS_SECONDS"] >= 3600
    assert first["LBLAB_DEFAULT_SANDBOX_WRITERS"] == "staff"
    assert first["LBLAB_RATE_SESSIONS"] != "off" and first["LBLAB_RATE_STARTS"] != "off"
    # The secret key: made once for this installation, private, and kept.
    key_file = tmp_path / "secret_key"
    assert first["SECRET_KEY"] == key_file.read_text().strip() and len(first["SECRET_KEY"]) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings_in(env)["SECRET_KEY"] == first["SECRET_KEY"]
    assert settings_in({**env, "LBLAB_STATE_DIR": str(tmp_path / "other")})["SECRET_KEY"] != \
        first["SECRET_KEY"]


def test_local_mode_stays_easy(tmp_path):
    local = settings_in({"LBLAB_STATE_DIR": str(tmp_path)})
    assert local["DEBUG"] is True and local["SESSION_COOKIE_SECURE"] is not True
    assert local["LBLAB_DEFAULT_SANDBOX_WRITERS"] == "anyone"
    assert local["LBLAB_RATE_SESSIONS"] == "off"
    assert local["SECRET_KEY"] and "insecure" not in local["SECRET_KEY"]


@pytest.mark.parametrize("env", [{}, {"LBLAB_TLS": "0"}], ids=["behind-tls", "plain-http"])
def test_check_deploy_passes_in_public_mode(tmp_path, env):
    out = run({"LBLAB_PUBLIC": "1", "LBLAB_STATE_DIR": str(tmp_path), **env},
              "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout


def test_check_deploy_fails_in_local_mode(tmp_path):
    out = run({"LBLAB_STATE_DIR": str(tmp_path)}, "manage.py", "check", "--deploy",
              "--fail-level", "WARNING")
    assert out.returncode != 0 and "DEBUG" in out.stderr + out.stdout


@pytest.fixture
def public_site(settings, db):
    settings.DEBUG = False
    settings.ROOT_URLCONF = "tests.explainer.boom_urls"
    settings.ALLOWED_HOSTS = ["testserver"]


def test_the_site_shows_its_own_404_page(public_site):
    resp = Client().get("/lab/someone-elses/")
    body = resp.content.decode()
    assert resp.status_code == 404
    assert "Nothing here" in body and "belongs to someone else" in body
    assert "Traceback" not in body and "someone-elses" not in body and len(body) < 5000


def test_the_site_shows_its_own_500_page_without_the_error(public_site):
    resp = Client(raise_request_exception=False).get("/boom/")
    body = resp.content.decode()
    assert resp.status_code == 500
    assert "Something broke on our side" in body
    assert "s3cr3t" not in body and "Traceback" not in body and len(body) < 5000


def test_a_host_the_site_does_not_serve_gets_400_not_a_debug_page(public_site):
    resp = Client(raise_request_exception=False).get("/", HTTP_HOST="evil.example")
    assert resp.status_code == 400 and "ALLOWED_HOSTS" not in resp.content.decode()


def test_healthz_answers_over_plain_http_behind_tls(public_site, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    resp = Client().get("/healthz")
    assert resp.status_code == 200 and resp.content == b"ok\n"
    assert Client().get("/labs/").status_code == 301  # everything else goes to HTTPS


def test_manage_py_lab_public_starts_the_site_in_public_mode(tmp_path):
    import argparse

    from labs.sandbox.launcher import Launcher, add_arguments, options_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    plain = Launcher(options_from(parser.parse_args(["--state-dir", str(tmp_path)])), env={})
    assert "LBLAB_PUBLIC" not in plain._site_env()
    public = Launcher(options_from(parser.parse_args(["--public", "--state-dir", str(tmp_path)])),
                      env={})
    env = public._site_env()
    assert env["LBLAB_PUBLIC"] == "1" and env["LBLAB_TLS"] == "0" and env["DEBUG"] == "0"
    tls = Launcher(options_from(parser.parse_args(["--public", "--behind-tls"])), env={})
    assert tls._site_env()["LBLAB_TLS"] == "1"
