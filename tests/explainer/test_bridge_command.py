"""python manage.py bridge: refuses a layer it cannot reach through; --print shows ticks."""
import json
import os
import subprocess
import sys
import time

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
    try:
        import urllib.request
        time.sleep(1.0)
        for _ in range(3):
            urllib.request.urlopen(f"{lab.proxy_url}/x", timeout=3).read()
        time.sleep(1.0)
    finally:
        stop(proc)
    out, err = proc.communicate(timeout=5)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and all(line["proxy"] in (True, None) for line in lines)
    assert sum(line["requests"] for line in lines) == 3
    assert "group" not in err and "stdout" in err
    assert "bridge: stopped" in err  # SIGTERM ends it cleanly
