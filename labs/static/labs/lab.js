/* One lab page: validate the YAML as you type, run, poll, show the result.
 *
 * The server does everything that matters (validation through the proxy's own config
 * parser, the run in its own process, the grading); this file only talks to
 * /labs/<slug>/... and draws: errors next to the lines they name, a progress bar, the
 * evidence, a uPlot chart and the Mermaid diagrams.
 */
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('page-data').textContent);
  const topology = JSON.parse(document.getElementById('topology-text').textContent);
  const base = `/labs/${data.slug}`;
  const $ = (sel, root = document) => root.querySelector(sel);
  const editor = $('#document');
  const gutter = $('#gutter');
  const errorsBox = $('#errors');
  const csrf = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || '';

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  async function post(path, body) {
    const resp = await fetch(base + path, {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-CSRFToken': csrf},
      body: JSON.stringify(body || {}),
    });
    let payload = {};
    try { payload = await resp.json(); } catch (e) { payload = {error: `HTTP ${resp.status}`}; }
    return {ok: resp.ok, status: resp.status, data: payload};
  }

  // ---------------------------------------------------------------- errors in place

  /* Find the line a config path ("pools.web.health.interval", "pools.web.backends[1].name")
   * points at: walk the keys downwards, each one more indented than its parent. */
  function lineOf(path) {
    const lines = editor.value.split('\n');
    if (!path) return null;
    const parts = path.split(/\.|(?=\[)/).filter(Boolean);
    let from = 0, indent = -1, found = null;
    for (const part of parts) {
      const index = part.match(/^\[(\d+)\]$/);
      let hit = null;
      if (index) {
        let n = -1;
        for (let i = from; i < lines.length; i++) {
          const m = lines[i].match(/^(\s*)- /);
          if (m && m[1].length > indent - 1) { n++; if (n === Number(index[1])) { hit = i; break; } }
        }
      } else {
        const re = new RegExp(`^(\\s*)(- )?${part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*:`);
        for (let i = from; i < lines.length; i++) {
          const m = lines[i].match(re) || lines[i].match(new RegExp(`[{,]\\s*${part}\\s*:`));
          if (m) { hit = i; break; }
        }
      }
      if (hit === null) break;
      found = hit;
      from = hit;
      indent = (lines[hit].match(/^\s*/) || [''])[0].length;
    }
    return found;
  }

  function paintGutter(marks) {
    const n = editor.value.split('\n').length;
    const rows = [];
    for (let i = 0; i < n; i++) rows.push(marks.has(i) ? '●' : String(i + 1));
    gutter.textContent = rows.join('\n');
    gutter.scrollTop = editor.scrollTop;
  }

  function showErrors(errors) {
    errorsBox.replaceChildren();
    const marks = new Set();
    if (!errors || !errors.length) {
      errorsBox.append(el('p', {class: 'ok'}, '✓ the proxy accepts this config'));
      paintGutter(marks);
      return;
    }
    const list = el('ul');
    for (const e of errors) {
      const line = lineOf(e.path);
      if (line !== null) marks.add(line);
      const item = el('li', {}, el('code', {}, e.path || '(config)'), ': ', e.message);
      if (line !== null) {
        const jump = el('a', {href: '#'}, `line ${line + 1}`);
        jump.addEventListener('click', ev => { ev.preventDefault(); goToLine(line); });
        item.append(' · ', jump);
      }
      list.append(item);
    }
    errorsBox.append(el('p', {class: 'bad'}, `${errors.length} problem${errors.length > 1 ? 's' : ''}:`), list);
    paintGutter(marks);
  }

  function goToLine(line) {
    const lines = editor.value.split('\n');
    const start = lines.slice(0, line).reduce((a, l) => a + l.length + 1, 0);
    editor.focus();
    editor.setSelectionRange(start, start + lines[line].length);
  }

  let timer = null;
  async function check() {
    const r = await post('/validate', {document: editor.value});
    showErrors(r.ok ? r.data.errors : (r.data.errors || [{path: '', message: r.data.error}]));
    return r.ok && r.data.ok;
  }
  editor.addEventListener('input', () => { paintGutter(new Set()); clearTimeout(timer); timer = setTimeout(check, 600); });
  editor.addEventListener('scroll', () => { gutter.scrollTop = editor.scrollTop; });
  $('#check').addEventListener('click', check);
  $('#reset').addEventListener('click', () => { editor.value = topology; check(); });
  paintGutter(new Set());

  // ---------------------------------------------------------------- run and poll

  const progressBox = $('#progress');
  async function run() {
    $('#run').disabled = true;
    const r = await post('/runs', {document: editor.value});
    if (!r.ok) {
      $('#run').disabled = false;
      showErrors(r.data.errors || [{path: '', message: r.data.error}]);
      return;
    }
    showErrors([]);
    poll(r.data.run_id);
  }
  $('#run').addEventListener('click', run);

  async function poll(runId) {
    progressBox.hidden = false;
    const bar = $('.bar span', progressBox), msg = $('.msg', progressBox);
    for (;;) {
      const resp = await fetch(`${base}/runs/${runId}/status`, {credentials: 'same-origin'});
      if (!resp.ok) { msg.textContent = `status: HTTP ${resp.status}`; break; }
      const st = await resp.json();
      bar.style.width = `${Math.round((st.progress || 0) * 100)}%`;
      msg.textContent = st.message || st.phase || '';
      if (st.state === 'done') { progressBox.hidden = true; showResult(runId, st.result); break; }
      if (st.state === 'refused') { progressBox.hidden = true; showErrors(st.errors.length ? st.errors : [{path: '', message: st.message}]); break; }
      if (st.state === 'failed') { msg.textContent = `The run broke: ${st.message}`; break; }
      await new Promise(res => setTimeout(res, 500));
    }
    $('#run').disabled = false;
  }

  // ---------------------------------------------------------------- the result

  function showResult(runId, res, scroll = true) {
    const box = $('#result');
    box.hidden = false;
    if (!res) { $('.headline', box).textContent = 'no result'; return; }
    const r = res.result;
    const verdict = $('.verdict', box);
    const graded = r.graded !== false;  // false: part of the sandbox died mid-run
    verdict.textContent = r.passed ? 'PASS' : graded ? 'FAIL' : "CAN'T GRADE";
    verdict.className = `verdict badge ${r.passed ? 'pass' : graded ? 'fail' : 'ungraded'}`;
    $('.headline', box).textContent = r.headline;
    const ev = $('.evidence', box);
    ev.replaceChildren(...r.evidence.map(line => el('li', {class: line.startsWith('PASS') ? 'ok' : line.startsWith('FAIL') || line.startsWith('BROKEN') ? 'bad' : 'info'}, line)));
    drawChart($('.chart', box), r.chart);
    $('.chart-title', box).textContent = r.chart ? r.chart.title : '';
    $('.chart-hint', box).textContent = r.chart && r.chart.kind !== 'bars' ? `x: lab seconds${data.scale === 1 ? '' : ` (× ${data.scale} = production seconds)`}; dashed lines: what the lab did` : '';
    drawDiagrams($('.diagrams', box), r.diagrams);
    const sb = res.sandbox || {};
    const pss = ((sb.pss_bytes || {}).total || 0) / 1e6;
    const figures = $('.figures', box);
    // Where it ran (labs/framework/placement.py): the site's driver, or processes and why.
    const where = sb.placement ? ` (${sb.placement.driver === 'processes' ? 'local processes' : `a ${sb.placement.driver} sandbox`})` : '';
    figures.replaceChildren(`Your sandbox ${sb.id || ''}${where} started in ${sb.start_seconds} s and uses ${pss.toFixed(0)} MB (PSS); locust saw ${(res.stats || {}).requests || 0} requests, p99 ${(res.stats || {}).p99} ms. `);
    if (sb.placement && sb.placement.driver !== sb.placement.site_driver) figures.append(el('span', {class: 'placement'}, `${sb.placement.message}. `));
    if (sb.id) figures.append(el('a', {href: `/lab/${sb.id}/`, target: '_blank'}, 'Watch your sandbox live'), ' (it stays up for a while after the run).');
    const rep = $('.reports', box);
    rep.replaceChildren('Report: ', el('a', {href: `${base}/runs/${runId}/report.html`, target: '_blank'}, 'HTML'), ' · ',
      el('a', {href: `${base}/runs/${runId}/report.html?download=1`}, 'download HTML'), ' · ',
      el('a', {href: `${base}/runs/${runId}/report.json`}, 'JSON'));
    // Counterfactual replay of this run (labs/framework/replay.py): a page of its own.
    let whatIf = $('.what-if', box);
    if (!whatIf) { whatIf = el('p', {class: 'what-if'}); rep.after(whatIf); }
    whatIf.replaceChildren(el('a', {href: `${base}/runs/${runId}/replay`},
      'What if I had used another algorithm? Replay this run side by side'));
    if (data.answer) showTracing(runId, res);
    if (scroll) box.scrollIntoView({behavior: 'smooth', block: 'start'});
  }

  function drawChart(node, chart) {
    node.replaceChildren();
    if (!chart) return;
    if (chart.kind === 'bars') {
      const max = Math.max(1, ...chart.values);
      const bars = el('div', {class: 'bars'});
      chart.labels.forEach((label, i) => {
        const v = chart.values[i];
        const bar = el('div', {class: `barcol${label === chart.highlight ? ' hot' : ''}`},
          el('span', {class: 'val'}, String(v)),
          el('span', {class: 'fill', style: `height:${Math.round(v / max * 180)}px`}),
          el('span', {class: 'lab'}, label));
        bars.append(bar);
      });
      node.append(bars);
      return;
    }
    if (!window.uPlot) { node.textContent = 'chart library not loaded'; return; }
    const markers = chart.markers || [];
    const opts = {
      width: Math.min(node.clientWidth || 800, 900), height: 280,
      scales: {x: {time: false}},
      axes: [{label: data.scale === 1 ? 'lab seconds' : `lab seconds (× ${data.scale} = production seconds)`,
               values: (u, ticks) => ticks.map(t => `${+t.toFixed(2)}s`)}, {label: chart.y_label}],
      series: [{label: 't'}].concat(chart.series.map(s => ({label: s.label, stroke: s.color, width: 2, spanGaps: false}))),
      hooks: {draw: [u => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = '#6b7280'; ctx.setLineDash([4, 4]); ctx.fillStyle = '#374151';
        ctx.font = `${11 * devicePixelRatio}px system-ui`;
        for (const m of markers) {
          const x = u.valToPos(m.t, 'x', true);
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.fillText(m.label.slice(0, 32), x + 4, u.bbox.top + 12 * devicePixelRatio);
        }
        ctx.restore();
      }]},
    };
    new window.uPlot(opts, [chart.x].concat(chart.series.map(s => s.values)), node);
  }

  let seq = 0;
  // wrap: long notes and messages wrap at the participants' width instead of being clipped.
  if (window.mermaid) window.mermaid.initialize({startOnLoad: false, securityLevel: 'strict', theme: 'neutral',
    sequence: {wrap: true, width: 180, noteMargin: 8}});
  async function drawDiagrams(node, diagrams) {
    node.replaceChildren();
    for (const d of diagrams || []) {
      const fig = el('figure', {}, el('figcaption', {}, d.title));
      const body = el('div', {class: 'mermaid-box'});
      fig.append(body);
      node.append(fig);
      await renderMermaid(body, d.mermaid);
    }
  }
  async function renderMermaid(body, text) {
    try {
      const {svg} = await window.mermaid.render(`lab-mmd-${++seq}`, text);
      body.innerHTML = svg; // Mermaid's own output, strict security level
    } catch (e) {
      body.replaceChildren(el('pre', {}, text));
    }
  }

  // ---------------------------------------------------------------- tracing (lab 9)

  function showTracing(runId, res) {
    const box = $('#tracing');
    box.hidden = false;
    const tbody = $('tbody', $('table.failed', box));
    tbody.replaceChildren(...(res.failed_requests || []).map(e => {
      const row = el('tr', {tabindex: '0'}, el('td', {}, (e.t || 0).toFixed(2)), el('td', {}, el('code', {}, e.request_id)),
        el('td', {}, `${e.method} ${e.path}`), el('td', {}, String(e.status)), el('td', {}, e.backend || '—'),
        el('td', {}, e.termination), el('td', {}, e.error || ''));
      const open = async () => {
        const resp = await fetch(`${base}/runs/${runId}/requests/${encodeURIComponent(e.request_id)}`, {credentials: 'same-origin'});
        if (!resp.ok) return;
        const d = await resp.json();
        const trace = $('.trace', box);
        trace.replaceChildren(el('h3', {}, d.title), el('pre', {class: 'event'}, JSON.stringify(d.event, null, 1)));
        const diagram = el('div', {class: 'mermaid-box'});
        trace.append(diagram);
        renderMermaid(diagram, d.mermaid);
      };
      row.addEventListener('click', open);
      row.addEventListener('keydown', ev => { if (ev.key === 'Enter') open(); });
      return row;
    }));
    const form = $('#answers');
    form.onsubmit = async ev => {
      ev.preventDefault();
      const answers = {};
      for (const sel of form.querySelectorAll('select')) {
        const [incident, field] = sel.name.split('.');
        answers[incident] = answers[incident] || {};
        const v = sel.value;
        answers[incident][field] = /^\d+$/.test(v) ? Number(v) : v;
      }
      const r = await post(`/runs/${runId}/answers`, {answers});
      if (r.ok) {
        showResult(runId, r.data.result, false);
        showFeedback(r.data.result.result.evidence);
      } else showErrors(r.data.errors || [{path: '', message: r.data.error}]);
    };
  }

  /* The verdict on each incident, right under the form it answers: which fields are
   * wrong and where to look (the grader never says the right value). */
  function showFeedback(evidence) {
    const list = $('#tracing .answer-feedback');
    list.replaceChildren(...evidence.filter(l => /incident /.test(l)).map(line =>
      el('li', {class: line.startsWith('PASS') ? 'ok' : line.startsWith('FAIL') ? 'bad' : 'info'}, line)));
  }

  // ---------------------------------------------------------------- the fix, on request

  $('#reveal').addEventListener('click', async () => {
    if (!data.revealed && !confirm('Show the documented fix? Try on your own first: the lab is more useful that way. A pass after this is recorded as "passed after showing the fix".')) return;
    const r = await post('/solution', {});
    if (!r.ok) return;
    data.revealed = true;
    const box = $('#solution');
    box.hidden = false;
    // Rendered on the server by the course's Markdown renderer (it escapes everything
    // and adds only its own tags), so the fix reads like a lesson.
    $('.why', box).innerHTML = r.data.why_html;
    $('.yaml', box).textContent = r.data.yaml;
    $('#use-solution').onclick = () => { editor.value = r.data.yaml; check(); };
  });

  // ---------------------------------------------------------------- earlier runs

  for (const link of document.querySelectorAll('[data-run]')) {
    link.addEventListener('click', ev => { ev.preventDefault(); poll(link.dataset.run); });
  }
})();
