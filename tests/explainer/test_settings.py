"""Settings come from the environment, read once at import: each case runs in a subprocess."""
import json
import os
import secrets
import subprocess
import sys

import pytest

from tests.explainer.parts import REPO


def run_django(code: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY")}
    script = ("import django, os\n"
              "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'lblab.settings')\n"
              "django.setup()\n" + code)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_defaults_are_sqlite_and_the_in_memory_layer(tmp_path):
    proc = run_django(
        "from django.conf import settings\n"
        "import json\n"
        "print(json.dumps([settings.DATABASES['default']['ENGINE'],\n"
        "  settings.CHANNEL_LAYERS['default']['BACKEND'], settings.DEBUG,\n"
        "  settings.LBLAB_SANDBOX, settings.LBLAB_EMBEDDED_BRIDGE, settings.STATIC_URL]))\n",
        {"LBLAB_VAR_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["django.db.backends.sqlite3",
                                       "channels.layers.InMemoryChannelLayer", True, "default",
                                       True, "/static/"]


def test_debug_off_uses_this_installations_secret_key(tmp_path):
    # No fixed default: without SECRET_KEY a key is made once and kept in the state dir.
    env = {"DEBUG": "0", "LBLAB_VAR_DIR": str(tmp_path), "LBLAB_STATE_DIR": str(tmp_path)}
    proc = run_django("from django.conf import settings\nprint(settings.SECRET_KEY)", env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (tmp_path / "secret_key").read_text().strip()
    proc = run_django("from django.conf import settings\nprint(settings.DEBUG)",
                      {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(40),
                       "LBLAB_VAR_DIR": str(tmp_path)})
    assert proc.returncode == 0 and proc.stdout.strip() == "False"
    proc = run_django("", {"DEBUG": "maybe", "LBLAB_VAR_DIR": str(tmp_path)})
    assert proc.returncode != 0 and "DEBUG='maybe'" in proc.stderr


def test_redis_url_gives_a_channel_layer_that_really_round_trips(tmp_path):
    group = f"sandbox.t{secrets.token_hex(4)}"
    proc = run_django(
        "import asyncio\n"
        "from channels.layers import get_channel_layer\n"
        "async def main():\n"
        "    layer = get_channel_layer()\n"
        "    print(type(layer).__module__ + '.' + type(layer).__name__)\n"
        "    channel = await layer.new_channel()\n"
        f"    await layer.group_add('{group}', channel)\n"
        f"    await layer.group_send('{group}', {{'type': 'lab.tick', 'seq': 42}})\n"
        "    msg = await asyncio.wait_for(layer.receive(channel), 5)\n"
        f"    await layer.group_discard('{group}', channel)\n"
        "    print(msg['type'], msg['seq'])\n"
        "asyncio.run(main())\n",
        {"REDIS_URL": "redis://127.0.0.1:6379/11", "LBLAB_VAR_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["channels_redis.core.RedisChannelLayer",
                                           "lab.tick 42"]


@pytest.fixture
def postgres_db():
    """A fresh PostgreSQL database (the machine's server, trust auth), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"lblab_expl_{secrets.token_hex(4)}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                             autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_database_url_really_migrates_and_queries_postgresql(postgres_db, tmp_path):
    env = {"DATABASE_URL": postgres_db, "LBLAB_VAR_DIR": str(tmp_path)}
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO,
                             env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    proc = run_django(
        "from django.db import connection\n"
        "from django.contrib.auth.models import User\n"
        "User.objects.create_user('learner', password='x' * 12)\n"
        "print(connection.vendor, User.objects.filter(username='learner').count())\n", env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "postgresql 1"
    assert not list(tmp_path.glob("*.sqlite3"))  # nothing went to SQLite
