"""python manage.py bridge: refuses a layer it cannot reach through; --print shows ticks."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from django.core.management import CommandError, call_command

from tests.explainer.parts import REPO, stop


def test_refuses_the_in_memory_layer_with_what_to_do(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with pytest.raises(CommandError) as info:
        call_command("bridge", "--admin-url", "http://127.0.0.1:9", "--sandbox", "default")
    assert "REDIS_URL" in str(info.value) and "LBLAB_EMBEDDED_BRIDGE" in str(info.value)
    with pytest.raises(CommandError):
        call_command("bridge", "--sandbox", "../x", "--print")


def test_print_mode_streams_ticks_from_a_real_proxy(lab, tmp_path):
    env = {**os.environ, "LBLAB_VAR_DIR": str(tmp_path)}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "manage.py", "bridge", "--admin-url", lab.admin_url,
                             "--sandbox", "default", "--print", "--tick-ms", "100"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    lines: list[dict] = []
    reader = threading.Thread(target=_collect, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        # Send only once the bridge reports the proxy reachable: on a loaded
        # machine Django's start-up alone can take seconds.
        assert _wait(lambda: any(line["proxy"] for line in lines), 20), "bridge never connected"
        for _ in range(3):
            urllib.request.urlopen(f"{lab.proxy_url}/x", timeout=3).read()
        _wait(lambda: sum(line["requests"] for line in lines) >= 3, 10)
    finally:
        stop(proc)
    reader.join(timeout=5)
    err = proc.stderr.read()
    assert lines and all(line["proxy"] in (True, None) for line in lines)
    assert sum(line["requests"] for line in lines) == 3
    assert "group" not in err and "stdout" in err
    assert "bridge: stopped" in err  # SIGTERM ends it cleanly


def _collect(stream, lines: list) -> None:
    for raw in stream:
        if raw.startswith("{"):
            lines.append(json.loads(raw))


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
