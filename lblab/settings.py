"""LBLab settings, read from the environment once at import.

The embedded default needs nothing: SQLite under var/, an in-memory channel
layer (so the bridge runs inside the daphne process, see explainer/bridges.py),
a secret key made once per installation. Workshops set DATABASE_URL (PostgreSQL via dj-database-url)
and REDIS_URL (channels_redis, so `manage.py bridge` can run as its own
process and several daphne workers share one group).

Public mode (LBLAB_PUBLIC=1: ``manage.py lab --public``, compose.yml) is for strangers:
DEBUG off, the site's own error pages, the shared sandbox read-only to visitors, rate
limits on, secure cookies and HSTS behind TLS; ``manage.py check --deploy`` passes.

Environment:
    LBLAB_PUBLIC          1: public mode (default 0: one learner on their own machine)
    LBLAB_TLS             1: served over HTTPS by a TLS terminator that sets
                          X-Forwarded-Proto (default: on in public mode)
    SECRET_KEY            default: made once per installation, kept in
                          $LBLAB_STATE_DIR/secret_key (never a fixed default)
    DEBUG                 1/true/yes/on (default on, off in public mode)
    ALLOWED_HOSTS         comma separated (default: localhost, 127.0.0.1, [::1])
    CSRF_TRUSTED_ORIGINS  comma separated origins (e.g. https://lab.example.org)
    DATABASE_URL          e.g. postgresql://postgres@127.0.0.1:5432/lblab
    REDIS_URL             e.g. redis://127.0.0.1:6379/0
    LBLAB_SANDBOX         the sandbox the dashboard at / shows (default "default")
    LBLAB_ADMIN_URL       optional: show a proxy you started yourself at this admin
                          URL as sandbox LBLAB_SANDBOX, instead of asking SandboxService
    LBLAB_PROXY_URL       optional, with LBLAB_ADMIN_URL: where clients reach the proxy
    LBLAB_EMBEDDED_BRIDGE 1/0: run the bridge inside the web process (default: on
                          without REDIS_URL, off with it)
    LBLAB_VAR_DIR         where SQLite lives (default <repo>/var)
    LBLAB_STATE_DIR       sandboxes, logs, rate counters, the secret key (default <repo>/var)
    LBLAB_DEFAULT_SANDBOX_WRITERS  who may change the shared sandbox at /: anyone | staff
                          | nobody (default anyone; staff in public mode)
    LBLAB_SANDBOX_PORTS   the ports sandboxes get (default 20000-29999)
    LBLAB_SANDBOX_DRIVER  processes (default) | containers | swarm
    LBLAB_LABS_FALLBACK   a graded lab that driver cannot serve: processes (default) | refuse
    LBLAB_SANDBOX_MEMORY_MB, _CPU_WEIGHT, _OPEN_FILES, _PROCESSES: per-sandbox OS limits
                          (512, 100, 1024, 64); LBLAB_SANDBOX_NO_LIMITS=1 turns them off
    LBLAB_RATE_SESSIONS, LBLAB_RATE_STARTS  per client address, e.g. 30/hour, or off
                          (default off; 30/hour and 10/hour in public mode)
    LBLAB_TRUST_FORWARDED 1: the client address is X-Forwarded-For's last hop
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: use 1/0, true/false, yes/no or on/off")


def env_range(name: str, default: tuple[int, int]) -> tuple[int, int]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        lo, hi = (int(x) for x in raw.split("-", 1))
    except ValueError:
        lo = hi = -1
    if not 1024 <= lo < hi <= 65535 or hi - lo < 16:
        raise ImproperlyConfigured(f"{name}={raw!r}: write a port range such as 20000-29999 "
                                   "(1024-65535, at least 16 ports)")
    return lo, hi


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# Public mode (manage.py lab --public, compose.yml): strangers reach the site.
LBLAB_PUBLIC = env_bool("LBLAB_PUBLIC", False)
DEBUG = env_bool("DEBUG", not LBLAB_PUBLIC)

STATE_DIR = Path(os.environ.get("LBLAB_STATE_DIR") or BASE_DIR / "var")


def installation_secret(state_dir: Path) -> str:
    """This installation's SECRET_KEY: made once, kept in <state dir>/secret_key (0600).

    Never a fixed default: a key everyone can read in the source would let anyone forge
    sessions. O_EXCL makes two processes starting at once agree on one key."""
    path = state_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    import secrets

    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY", "").strip() or installation_secret(STATE_DIR)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind TLS (public mode's default): cookies only over HTTPS, HTTP redirected, HSTS. The
# TLS terminator in front must set X-Forwarded-Proto (and drop one a client sends).
# LBLAB_TLS=0 runs a public site over plain HTTP (a workshop LAN): the operator's choice,
# so Django's deploy checks about HTTPS are silenced, not failed.
LBLAB_TLS = env_bool("LBLAB_TLS", LBLAB_PUBLIC)
if LBLAB_TLS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("LBLAB_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the front door's health checks speak HTTP
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("LBLAB_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("LBLAB_HSTS_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("LBLAB_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [
    # Asking browsers to preload HSTS for the whole domain is the domain owner's call.
    *([] if os.environ.get("LBLAB_HSTS_PRELOAD") else ["security.W021"]),
    *([] if LBLAB_TLS else ["security.W004", "security.W008", "security.W012",
                            "security.W016"]),
]
SESSION_COOKIE_HTTPONLY = True

# daphne's app does one thing: `runserver` serves ASGI (HTTP + WebSocket). Loaded for every
# other command it costs a quarter CPU-second of Twisted imports, and a graded lab run is
# such a command (`manage.py labs run`, one per run). Daphne the server does not need it.
RUNSERVER = sys.argv[1:2] == ["runserver"]

INSTALLED_APPS = [
    *(["daphne"] if RUNSERVER else []),
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "labs",
    "explainer",
    "explainer.course",
    "explainer.workshops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "explainer.middleware.ProblemMiddleware",
]

ROOT_URLCONF = "lblab.urls"
WSGI_APPLICATION = "lblab.wsgi.application"
ASGI_APPLICATION = "lblab.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # lblab/templates: the site's own error pages (404, 500...) and the problem page.
        "DIRS": [BASE_DIR / "templates", BASE_DIR / "lblab" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

VAR_DIR = Path(os.environ.get("LBLAB_VAR_DIR") or BASE_DIR / "var")
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60,
                                                  conn_health_checks=True)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # A workshop on the embedded default writes from many learners at once (sessions, joins,
    # runs): WAL lets reads go on beside the one writer, IMMEDIATE takes the write lock as a
    # transaction starts (two readers upgrading at once would fail "database is locked"),
    # and a writer waits up to 20 s for its turn (`./lab cohort` found 5 joins at once failing).
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                             "NAME": VAR_DIR / "lblab.sqlite3",
                             "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;",
                                         "transaction_mode": "IMMEDIATE", "timeout": 20}}}

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 500, "expiry": 10},
    }}
else:
    # Per process: only consumers in this same process see group messages.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer",
                                  "CONFIG": {"capacity": 500}}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Files are served straight from STATICFILES_DIRS (no collectstatic step needed
# for the one-command launcher); compose can still run collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------- LBLab

LBLAB_SANDBOX = os.environ.get("LBLAB_SANDBOX", "default").strip() or "default"
LBLAB_ADMIN_URL = os.environ.get("LBLAB_ADMIN_URL", "").strip().rstrip("/")
LBLAB_PROXY_URL = os.environ.get("LBLAB_PROXY_URL", "").strip().rstrip("/")
LBLAB_EMBEDDED_BRIDGE = env_bool("LBLAB_EMBEDDED_BRIDGE", not REDIS_URL)
# Seconds the web process waits for the admin API or a toy backend.
LBLAB_ADMIN_TIMEOUT = float(os.environ.get("LBLAB_ADMIN_TIMEOUT", "3"))

# ---------------------------------------------------------------- hosting a cohort

# Who may change the shared default sandbox (the dashboard at /): "anyone" (the operator
# at their laptop, the local default), "staff" (logged-in staff; the public default),
# "nobody". Everyone may watch it; every other sandbox is its owner's alone.
LBLAB_DEFAULT_SANDBOX_WRITERS = os.environ.get(
    "LBLAB_DEFAULT_SANDBOX_WRITERS", "staff" if LBLAB_PUBLIC else "anyone").strip()
if LBLAB_DEFAULT_SANDBOX_WRITERS not in ("anyone", "staff", "nobody"):
    raise ImproperlyConfigured(f"LBLAB_DEFAULT_SANDBOX_WRITERS={LBLAB_DEFAULT_SANDBOX_WRITERS!r}: "
                               "use anyone, staff or nobody")
# Which driver runs learners' sandboxes (labs/sandbox/drivers.py): processes | containers |
# swarm.
LBLAB_SANDBOX_DRIVER = os.environ.get("LBLAB_SANDBOX_DRIVER", "processes").strip()
# A graded lab the driver cannot serve (labs/framework/placement.py): processes | refuse.
LBLAB_LABS_FALLBACK = os.environ.get("LBLAB_LABS_FALLBACK", "processes").strip()
if LBLAB_LABS_FALLBACK not in ("processes", "refuse"):
    raise ImproperlyConfigured(f"LBLAB_LABS_FALLBACK={LBLAB_LABS_FALLBACK!r}: use processes "
                               "or refuse")
# The ports sandboxes are given (below Linux's ephemeral range by default).
LBLAB_SANDBOX_PORTS = env_range("LBLAB_SANDBOX_PORTS", (20000, 29999))
# Per-sandbox OS limits (labs/sandbox/limits.py): cgroups when possible, rlimits otherwise.
try:
    from labs.sandbox.limits import Limits as _Limits

    _limits = _Limits.from_env()
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
LBLAB_SANDBOX_LIMITS = None if _limits is None else {
    "memory_mb": _limits.memory_mb, "cpu_weight": _limits.cpu_weight,
    "open_files": _limits.open_files, "processes": _limits.processes}
# Per client address: new learner sessions and sandbox starts ("N/period", "off").
LBLAB_RATE_SESSIONS = os.environ.get("LBLAB_RATE_SESSIONS", "30/hour" if LBLAB_PUBLIC else "off")
LBLAB_RATE_STARTS = os.environ.get("LBLAB_RATE_STARTS", "10/hour" if LBLAB_PUBLIC else "off")
# Behind LBLab's front door the client address is X-Forwarded-For's last hop.
LBLAB_TRUST_FORWARDED = env_bool("LBLAB_TRUST_FORWARDED", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"explainer": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
