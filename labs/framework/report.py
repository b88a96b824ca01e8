"""A run's report, as JSON and as one self-contained HTML page.

The HTML needs nothing from a server or the network: styles are inline, the chart is an
inline SVG drawn here, and each Mermaid diagram is its source text in a
``<pre class="mermaid">``, drawn in the browser by the vendored Mermaid, which is inlined
into the page (static/vendor/, about 3.6 MB). So a learner keeps one file that renders
every diagram when opened from disk, offline; long notes wrap instead of being clipped.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import yaml

from labs.framework.timescale import TimeScale, fmt_seconds

MERMAID_JS = (Path(__file__).resolve().parents[2] / "static" / "vendor" / "mermaid-11.17.2"
              / "mermaid.min.js")
# Long notes and messages wrap at the participants' width instead of running off the page.
MERMAID_INIT = ("{startOnLoad:true,securityLevel:'strict',theme:'neutral',"
                "sequence:{wrap:true,width:180,noteMargin:8}}")
_inline_cache: dict[str, str] = {}


def inline_mermaid() -> str:
    """The vendored Mermaid as the body of an inline <script>: "<!--" is escaped so the
    HTML parser cannot leave the script early (the file has no "</script")."""
    if "js" not in _inline_cache:
        text = MERMAID_JS.read_text(encoding="utf-8")
        if "</script" in text.lower():
            raise RuntimeError(f"{MERMAID_JS} contains '</script': it cannot be inlined as is")
        _inline_cache["js"] = text.replace("<!--", "<\\!--")
    return _inline_cache["js"]


def as_json(lab, outcome) -> dict:
    data = outcome.to_json()
    data["lab"] = lab.summary()
    data["document"] = outcome.document
    data["generated_at"] = time.time()
    return data


def write(lab, outcome, run_dir: Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    data = as_json(lab, outcome)
    json_path = run_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=1, default=str))
    html_path = run_dir / "report.html"
    html_path.write_text(render_html(data))
    return json_path, html_path


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def render_html(data: dict) -> str:
    result = data["result"]
    scale = TimeScale(data["time_scale"]["factor"])
    passed = result["passed"]
    graded = result.get("graded", True)
    word = "PASS" if passed else "FAIL" if graded else "CAN'T GRADE"
    colour = "#15803d" if passed else "#b91c1c" if graded else "#4b5563"
    lab = data["lab"]
    doc_text = yaml.safe_dump(data.get("document") or {}, sort_keys=False)
    stats = data.get("stats") or {}
    sandbox = data.get("sandbox") or {}
    pss = (sandbox.get("pss_bytes") or {}).get("total")
    evidence = "".join(f"<li class='{'ok' if e.startswith('PASS') else 'bad' if e.startswith(('FAIL', 'BROKEN')) else ''}'>"
                       f"{_e(e)}</li>" for e in result.get("evidence") or [])
    metrics = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
                      for k, v in (result.get("metrics") or {}).items() if k != "broken")
    timeline = "".join(
        f"<tr><td>{_e(scale.short(m['t']))}</td><td>{_e(m.get('kind'))}</td>"
        f"<td>{_e(m.get('what'))}</td></tr>" for m in data.get("timeline") or [])
    diagrams = "".join(
        f"<section><h3>{_e(d['title'])}</h3><pre class='mermaid'>{_e(d['mermaid'])}</pre>"
        "</section>" for d in result.get("diagrams") or [])
    chart = svg_chart(result.get("chart"), scale) if result.get("chart") else ""
    locust = (f"{stats.get('requests', 0)} requests, {stats.get('failures', 0)} failed, "
              f"p50 {stats.get('p50')} ms, p99 {stats.get('p99')} ms, "
              f"{stats.get('rps')} req/s (locust's view)") if stats else "no locust numbers"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{_e(lab['title'])}: {_e(word)}</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#111827}}
h1{{font-size:1.5em;margin-bottom:.2em}} .sub{{color:#4b5563;margin-top:0}}
.verdict{{display:inline-block;padding:.3em .8em;border-radius:6px;font-weight:700;color:#fff;
background:{colour}}}
li.ok{{color:#166534}} li.bad{{color:#991b1b}} ul.ev li{{margin:.3em 0;font-family:ui-monospace,monospace;font-size:13px}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border-bottom:1px solid #e5e7eb;padding:3px 8px;text-align:left;vertical-align:top}}
pre{{background:#f3f4f6;padding:.8em;overflow:auto;font-size:12.5px}}
pre.mermaid{{background:#fff;border:1px solid #e5e7eb;white-space:pre-wrap}}
pre.mermaid svg{{max-width:100%;height:auto}}
</style></head><body>
<h1>{_e(lab['title'])}</h1>
<p class="sub">{_e(lab['concept'])} · run {_e(data['run_id'])} ({_e(data.get('label'))}) ·
time scale {_e(scale.label)}: one lab second stands for {scale.factor:g} production seconds</p>
<p><span class="verdict">{_e(word)}</span> {_e(result['headline'])}</p>
<h2>Evidence</h2><ul class="ev">{evidence}</ul>
<h2>Chart</h2>{chart or '<p>no chart</p>'}
<h2>The critical moment</h2>{diagrams or '<p>no diagram</p>'}
<p class="sub">Codes like 504 PH are a status and a termination code: its first letter says
who ended the request (C client, S server, P proxy; -- is a clean finish), its second in which
phase (R reading the request, Q picking a backend, C connecting, H waiting for the response
head, D sending the body). Every code is in the error contract, docs/errors.md.</p>
<h2>Measured</h2><table>{metrics}</table>
<p>Traffic: {_e(locust)}. Sandbox {_e(sandbox.get('id', ''))}{_e(_where(sandbox))}: started in
{_e(fmt_seconds(sandbox.get('start_seconds') or 0))}, memory (PSS) {_e(_mb(pss))}.</p>
<h2>Timeline</h2><table><tr><th>when</th><th>kind</th><th>what</th></tr>{timeline}</table>
<h2>Config tried</h2><pre>{_e(doc_text)}</pre>
<script>{inline_mermaid()}</script>
<script>if(window.mermaid){{mermaid.initialize({MERMAID_INIT});}}</script>
</body></html>
"""


def _mb(n) -> str:
    return f"{n / 1e6:.0f} MB" if n else "?"


def _where(sandbox: dict) -> str:
    """Where the run's sandbox ran, as " (containers)" or " (processes: why)"."""
    placed = sandbox.get("placement")
    if not placed:
        return ""
    if placed.get("driver") != placed.get("site_driver"):
        return f" ({placed.get('driver')}: {placed.get('message')})"
    return f" ({placed.get('driver')})"


def svg_chart(chart: dict, scale: TimeScale, width: int = 900, height: int = 300) -> str:
    if chart.get("kind") == "bars":
        return _svg_bars(chart, width, height)
    xs = chart.get("x") or []
    series = chart.get("series") or []
    if not xs or not series:
        return ""
    left, right, top, bottom = 60, 20, 30, 50
    w, h = width - left - right, height - top - bottom
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1
    ymax = max([v for s in series for v in s["values"] if v is not None] + [1.0])
    ymax = _nice(ymax)

    def px(x):
        return left + (x - x0) / (x1 - x0) * w

    def py(y):
        return top + h - (y / ymax) * h

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
             f"width='100%' role='img' aria-label='{_e(chart['title'])}' "
             "style='font:11px system-ui,sans-serif'>",
             f"<text x='{left}' y='16' font-size='13' font-weight='600'>{_e(chart['title'])}</text>"]
    for i in range(5):
        y = ymax * i / 4
        parts.append(f"<line x1='{left}' x2='{left + w}' y1='{py(y):.1f}' y2='{py(y):.1f}' "
                     "stroke='#e5e7eb'/>")
        parts.append(f"<text x='{left - 6}' y='{py(y) + 4:.1f}' text-anchor='end'>{y:g}</text>")
    step = _nice((x1 - x0) / 8)
    t = 0.0
    while t <= x1 + 1e-9:
        if t >= x0:
            label = f"{t:g}s" if scale.factor == 1 else f"{t:g}s ({scale.prod(t):g}s)"
            parts.append(f"<text x='{px(t):.1f}' y='{top + h + 16}' text-anchor='middle'>"
                         f"{_e(label)}</text>")
        t += step
    parts.append(f"<text x='{left + w / 2}' y='{height - 8}' text-anchor='middle'>lab seconds"
                 f"{'' if scale.factor == 1 else f' (production seconds at {scale.label})'}</text>")
    parts.append(f"<text x='14' y='{top + h / 2}' transform='rotate(-90 14 {top + h / 2})' "
                 f"text-anchor='middle'>{_e(chart.get('y_label', ''))}</text>")
    for m in chart.get("markers") or []:
        if x0 <= m["t"] <= x1:
            x = px(m["t"])
            parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{top + h}' "
                         "stroke='#6b7280' stroke-dasharray='3 3'/>")
            parts.append(f"<text x='{x + 3:.1f}' y='{top + 10}' fill='#374151' "
                         f"transform='rotate(90 {x + 3:.1f} {top + 10})'>{_e(m['label'][:40])}</text>")
    for s in series:
        points, path = [], []
        for x, v in zip(xs, s["values"]):
            if v is None:
                if points:
                    path.append(points)
                points = []
                continue
            points.append(f"{px(x):.1f},{py(v):.1f}")
        if points:
            path.append(points)
        for pts in path:
            parts.append(f"<polyline fill='none' stroke='{s['color']}' stroke-width='1.8' "
                         f"points='{' '.join(pts)}'/>")
    lx = left + 8
    for s in series:
        parts.append(f"<rect x='{lx}' y='{top + 2}' width='10' height='10' fill='{s['color']}'/>"
                     f"<text x='{lx + 14}' y='{top + 11}'>{_e(s['label'])}</text>")
        lx += 20 + 7 * len(s["label"])
    parts.append("</svg>")
    return "".join(parts)


def _svg_bars(chart: dict, width: int, height: int) -> str:
    labels, values = chart.get("labels") or [], chart.get("values") or []
    if not labels:
        return ""
    left, top, bottom = 60, 30, 40
    w, h = width - left - 20, height - top - bottom
    ymax = _nice(max(values + [1.0]))
    bw = w / len(labels)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
             f"width='100%' role='img' aria-label='{_e(chart['title'])}' "
             "style='font:11px system-ui,sans-serif'>",
             f"<text x='{left}' y='16' font-size='13' font-weight='600'>{_e(chart['title'])}</text>"]
    for i, (label, v) in enumerate(zip(labels, values)):
        bh = v / ymax * h
        x = left + i * bw + bw * 0.15
        color = "#dc2626" if label == chart.get("highlight") else "#2563eb"
        parts.append(f"<rect x='{x:.1f}' y='{top + h - bh:.1f}' width='{bw * 0.7:.1f}' "
                     f"height='{bh:.1f}' fill='{color}'/>")
        parts.append(f"<text x='{x + bw * 0.35:.1f}' y='{top + h + 14}' text-anchor='middle'>"
                     f"{_e(label)}</text>")
        parts.append(f"<text x='{x + bw * 0.35:.1f}' y='{top + h - bh - 4:.1f}' "
                     f"text-anchor='middle'>{v:g}</text>")
    parts.append(f"<text x='14' y='{top + h / 2}' transform='rotate(-90 14 {top + h / 2})' "
                 f"text-anchor='middle'>{_e(chart.get('y_label', ''))}</text></svg>")
    return "".join(parts)


def _nice(x: float) -> float:
    if x <= 0:
        return 1.0
    import math

    exp = math.floor(math.log10(x))
    f = x / 10 ** exp
    for n in (1, 2, 2.5, 5, 10):
        if f <= n:
            return n * 10 ** exp
    return 10 ** (exp + 1)
