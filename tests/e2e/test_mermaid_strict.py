"""The generated diagrams render in the vendored Mermaid, strict mode, in real Chromium.

Outside text with Mermaid and HTML syntax in it (quotes, ';', '#', '<b>', '<script>',
newlines, '%%') must neither break the parse nor become markup, and must still read.
"""
import json

import pytest
from playwright.sync_api import Page

from explainer import diagrams
from tests.explainer.parts import REPO

MERMAID = REPO / "static" / "vendor" / "mermaid-11.17.2" / "mermaid.min.js"
NASTY = 'end"]; <b>bold</b> <script>alert(1)</script> #60; &lt; `md` %% c\nalt'

STATE = {
    "listeners": {"end": {"bind": "127.0.0.1:8080", "protocol": "http", "routes": ["alt"]}},
    "routes": {"alt": {"match": {"path_prefix": "/<x>;", "headers": {"a|b": NASTY}},
                       "forward": "end"}},
    "pools": {"end": {"algorithm": "round_robin", "backends": [
        {"name": "end", "address": NASTY, "health": "unhealthy", "intent": "active",
         "eligible": False, "weight": 1},
        {"name": "b2", "address": "127.0.0.1:2", "health": "healthy", "intent": "draining",
         "eligible": False, "weight": 1}]}},
}
REQUEST = {"type": "request", "request_id": "id;1", "listener": "end", "client": "1.2.3.4:5",
           "method": "GET", "path": "/a;b#c<script>", "route": "alt", "pool": "end",
           "algorithm": "round_robin", "candidates": [{"name": "end", "eligible": True}],
           "inputs": {"key": NASTY}, "backend": "end", "status": 502, "proxy_error": True,
           "error": NASTY, "retries": [{"backend": "b2", "error": NASTY}], "termination": "SH"}
EPISODE = [{"type": "health_probe", "pool": "end", "backend": "end", "ok": False,
            "detail": NASTY, "ts": 1},
           {"type": "state_change", "pool": "end", "backend": "end", "kind": "health",
            "old": "healthy", "new": "unhealthy", "cause": NASTY, "ts": 2}]


# issue 14's features (zones as subgraphs, a dashed backup, a queue, max_connections)
# drawn from a real GET /state, with outside text in a zone name.
ANCHORS = json.loads((REPO / "tests" / "explainer" / "anchors_state_busy.json").read_text())
ANCHORS["pools"]["web"]["backends"][1]["zone"] = NASTY
ANCHORS["pools"]["web"]["queue"]["depth"] = 7


@pytest.mark.parametrize("text", [
    diagrams.topology(STATE, rates={"end": 3.0}),
    diagrams.topology(ANCHORS, rates={"b1": 12.0, "b4": 3.0}),
    diagrams.request_sequence(REQUEST),
    diagrams.health_episode(EPISODE, "end"),
], ids=["topology", "anchors", "request", "health"])
def test_renders_strict_without_markup_from_outside(page: Page, text):
    alerts = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    page.set_content("<div id=out></div>")
    page.add_script_tag(path=str(MERMAID))
    result = page.evaluate("""async (text) => {
        mermaid.initialize({startOnLoad: false, securityLevel: 'strict'});
        try {
            const {svg} = await mermaid.render('d1', text);
            const out = document.getElementById('out');
            out.innerHTML = svg;
            return {ok: true, text: out.textContent,
                    script: !!out.querySelector('script'), bold: !!out.querySelector('b')};
        } catch (e) { return {ok: false, error: String(e.message || e)}; }
    }""", text)
    assert result["ok"], result.get("error")
    assert not result["script"] and not result["bold"] and alerts == []
    # the outside text still reads, with lookalikes for the syntax characters
    assert "bold" in result["text"] and "alert(1)" in result["text"]
