/* LBLab live dashboard.
 *
 * Data flow: the page opens ws/lab/<sandbox>/ and gets one "first_paint" message
 * (state, topology diagram, recent requests, closed L4 connections, lifecycle events
 * and the live connections), then a "tick" from the bridge every ~250 ms (decisions:
 * request and connection events; connection_open events; lifecycle events;
 * per-backend stats; and once a second the state, its diagram and GET /connections).
 * If the socket keeps failing, it polls /api/<sandbox>/snapshot instead. Controls POST
 * forms (with the CSRF token) to /api/<sandbox>/control/<action> and show the JSON
 * answer; a refused change lists each of the proxy's paths with its message.
 *
 * Everything from the server is inserted as text (textContent), never as HTML;
 * Mermaid renders with securityLevel 'strict' from server-escaped text.
 */
(() => {
  'use strict';

  const app = document.getElementById('app');
  const SANDBOX = app.dataset.sandbox;
  const WS_PATH = app.dataset.wsPath;
  const API = app.dataset.apiBase;
  const BRIDGE_MODE = app.dataset.bridge;
  // The error contract (docs/errors.md served by the site): what "504 PH" and "(code --)" mean.
  const ERRORS_URL = app.dataset.errorsUrl || '/errors/';
  const reducedMotion = window.matchMedia('(prefers-reduced-motion: reduce)');

  // ------------------------------------------------------------------ helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key === 'style') node.setAttribute('style', value);
      else if (key.startsWith('data-') || key.startsWith('aria-') || key === 'role' || key === 'title'
               || key === 'type' || key === 'name' || key === 'value' || key === 'scope' || key === 'colspan'
               || key === 'tabindex' || key === 'for' || key === 'hidden' || key === 'min' || key === 'max') {
        node.setAttribute(key, value === true ? '' : value);
      } else node[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtTime(ts) {
    if (!ts) return '';
    const d = new Date(ts * 1000);
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function fmtMs(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
    if (v >= 100) return `${v.toFixed(0)} ms`;
    if (v >= 10) return `${v.toFixed(1)} ms`;
    return `${v.toFixed(2)} ms`;
  }

  function fmtBytes(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '–';
    if (n < 1000) return `${n} B`;
    if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
    if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
    return `${(n / 1e9).toFixed(1)} GB`;
  }

  function fmtAge(s) {
    if (s === null || s === undefined || Number.isNaN(s)) return '–';
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
  }

  function csrfToken() {
    const input = $('input[name="csrfmiddlewaretoken"]');
    if (input) return input.value;
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : '';
  }

  // Okabe-Ito based palette: tells backends apart for most colour vision.
  const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00',
                   '#7c3aed', '#374151', '#b45309', '#0f766e', '#be123c', '#4d7c0f'];
  const colors = new Map();
  function colorFor(name) {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  }

  function displayClass(b) {
    // Same precedence as explainer/diagrams.py backend_class: intent, ejection, health.
    if (b.intent === 'draining' || b.intent === 'maintenance') return b.intent;
    if (b.ejected) return 'ejected';
    return ['healthy', 'initial', 'unhealthy'].includes(b.health) ? b.health : 'initial';
  }
  const CLASS_TEXT = { healthy: 'healthy', initial: 'not checked yet', unhealthy: 'unhealthy',
                       ejected: 'ejected', draining: 'draining', maintenance: 'maintenance' };

  const ALGO_EXPLAIN = {
    round_robin: 'takes the eligible backends in turn, one after the other.',
    weighted_round_robin: 'takes backends in turn, heavier ones more often (smooth weighted round robin).',
    random: 'picks an eligible backend uniformly at random.',
    weighted_random: 'picks at random, in proportion to each backend\'s weight.',
    least_connections: 'picks the backend with the fewest active connections.',
    least_outstanding_requests: 'picks the backend with the fewest requests in flight.',
    least_response_time: 'picks the backend with the lowest smoothed response time for its load.',
    power_of_two_choices: 'samples a few backends at random and keeps the least loaded one.',
    ip_hash: 'hashes the client address: the same client lands on the same backend while the set does not change.',
    consistent_hash: 'hashes the key onto a ring of virtual nodes: adding or removing a backend moves only about 1/N of the keys.',
    consistent_hash_bounded: 'consistent hashing, but skips a backend already above load_factor × the average load.',
    maglev: 'looks the key up in a Maglev table: even spread and little disruption when backends change.',
  };

  const TERMINATION_WHO = { C: 'the client', S: 'the backend', P: 'the proxy' };
  const TERMINATION_PHASE = { R: 'while the request was arriving', Q: 'while picking a backend',
    C: 'while connecting to the backend', H: 'while waiting for the response headers',
    D: 'while the response body was flowing' };
  function explainTermination(code) {
    if (!code || code === '--') return 'finished normally';
    const who = TERMINATION_WHO[code[0]] || 'the connection';
    const phase = TERMINATION_PHASE[code[1]];
    return phase ? `${who} ended it ${phase}` : `${who} ended it`;
  }

  // An algorithm's inputs in one readable line, all of them: {"counts": {"b1": 0, "b2": 1}}
  // reads "counts={b1: 0, b2: 1}". Numbers keep at most three decimals.
  function inputValue(v) {
    if (typeof v === 'number' && !Number.isInteger(v)) return String(Math.round(v * 1000) / 1000);
    if (Array.isArray(v)) return `[${v.map(inputValue).join(', ')}]`;
    if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${k}: ${inputValue(x)}`).join(', ')}}`;
    return String(v);
  }
  function inputsText(inputs, limit = Infinity) {
    if (!inputs) return '';
    return Object.entries(inputs).slice(0, limit).map(([k, v]) => `${k}=${inputValue(v)}`).join(', ');
  }

  function statusClass(ev) {
    if (ev.type === 'connection') return ev.error ? '5xx' : '2xx';
    const s = ev.status || 0;
    return s ? `${Math.floor(s / 100)}xx` : 'none';
  }

  const CLOSED_BY = { client: 'closed by the client', backend: 'closed by the backend', proxy: 'closed by the proxy',
    idle: 'ended idle' };
  // gRPC status codes (grpc-status trailer), named as in the gRPC spec.
  const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
    'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED',
    'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
  function grpcText(g) {
    if (!g) return '';
    const code = Number(g.status);
    return `gRPC ${g.status}${GRPC_CODES[code] ? ' ' + GRPC_CODES[code] : ''}${g.message ? `: ${g.message}` : ''}`;
  }
  // How a connection event is named: its kind in words.
  function connWord(ev) {
    return { 'tls-passthrough': 'TLS', tls: 'TLS handshake', udp: 'UDP flow', h2: 'HTTP/2' }[ev.kind] || 'TCP';
  }
  function streamsText(n) { return `${n} stream${n === 1 ? '' : 's'}`; }

  function whyShort(ev) {
    if (!ev.backend && ev.error) return ev.error;
    const parts = [];
    if (ev.type === 'connection') {
      if (ev.kind === 'h2') parts.push(ev.streams > 1 ? `${ev.streams} streams, each routed on its own` : streamsText(ev.streams || 0));
      if (ev.tls && ev.tls.sni) parts.push(`SNI ${ev.tls.sni}`);
      if (ev.algorithm) parts.push(ev.algorithm);
      const inp = inputsText(ev.inputs);
      if (inp) parts.push(inp);
      parts.push(`↑${fmtBytes(ev.bytes_in || 0)} ↓${fmtBytes(ev.bytes_out || 0)}`);
      parts.push(CLOSED_BY[ev.closed_by] || 'closed');
      if (ev.error) parts.push(ev.error);
      else if (ev.backend && ev.kind !== 'udp' && !ev.bytes_in && !ev.bytes_out) parts.push('no data either way: a bare connect (a port check?)');
      return parts.join(' · ');
    }
    if (ev.type === 'request' && ev.status === 101) {
      parts.push(`WebSocket tunnel ↑${fmtBytes(ev.bytes_in || 0)} ↓${fmtBytes(ev.bytes_out || 0)}`);
    }
    if (ev.protocol === 'h2') parts.push(ev.stream_id ? `h2 stream ${ev.stream_id}` : 'h2');
    if (ev.grpc) parts.push(grpcText(ev.grpc));
    if (ev.sticky) parts.push(ev.sticky.hit ? `sticky hit (${ev.sticky.mode})` : `sticky miss (${ev.sticky.mode})`);
    if (ev.algorithm) parts.push(ev.algorithm);
    const inp = inputsText(ev.inputs);
    if (inp) parts.push(inp);
    if (ev.retries && ev.retries.length) parts.push(`${ev.retries.length} retr${ev.retries.length > 1 ? 'ies' : 'y'}`);
    return parts.join(' · ');
  }

  function eventId(ev) { return ev.request_id || ev.connection_id || `${ev.ts}-${ev.client}`; }

  // ------------------------------------------------------------------ model

  const model = {
    state: null,
    config: null,
    proxy: { reachable: null, detail: '' },
    stream: { connected: null, detail: '' },
    parts: null,
    feed: 'connecting',
    lastMessageAt: 0,
    proxyUrl: null,
    healthEvents: [],   // state_change events, oldest first
    selectedRequest: null,
    pinned: false,      // the learner picked the decision shown in "Why this backend?"
    selectedBackend: null,
    topologyText: '',
  };

  // ------------------------------------------------------------------ text log (role=log)

  const logList = $('#log');
  const LOG_MAX = 150;
  function logLine(text, level = '', ts = Date.now() / 1000) {
    const li = el('li', { class: level ? `lvl-${level}` : '' },
      el('span', { class: 't', text: fmtTime(ts).slice(0, 8) }), el('span', { text }));
    logList.append(li);
    while (logList.children.length > LOG_MAX) logList.firstElementChild.remove();
    logList.scrollTop = logList.scrollHeight;
  }

  function describeEvent(e) {
    switch (e.type) {
      case 'state_change': {
        const what = e.kind === 'health' ? 'health' : e.kind;
        const level = (e.new === 'unhealthy' || e.new === 'ejected') ? 'bad'
          : (e.new === 'healthy' || e.new === 'included' || e.new === 'active') ? 'ok' : 'warn';
        return [`${e.backend} (${e.pool}): ${what} ${e.old} → ${e.new}${e.cause ? ': ' + e.cause : ''}`, level];
      }
      case 'pool':
        return [`Pool ${e.pool}: ${e.what.replace(/_/g, ' ')}${e.detail ? ': ' + e.detail : ''}`, 'warn'];
      case 'drain':
        return [`Drain of ${e.backend} (${e.pool}): ${e.what}${e.detail ? ': ' + e.detail : ''}`, ''];
      case 'admin':
        return [`Admin change: ${e.verb.replace(/_/g, ' ')} ${e.target}${e.detail && Object.keys(e.detail).length ? ' ' + JSON.stringify(e.detail) : ''}`, ''];
      case 'warning':
        return [`Warning from ${e.source}: ${e.message}`, 'warn'];
      case 'stream_gap':
        return [`The bridge fell behind and missed ${e.dropped} events`, 'warn'];
      default:
        return [`${e.type}`, ''];
    }
  }

  // ------------------------------------------------------------------ Mermaid

  const mermaidReady = typeof window.mermaid !== 'undefined';
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';
  if (mermaidReady) {
    window.mermaid.initialize({
      startOnLoad: false,
      securityLevel: 'strict',
      theme: 'base',
      themeVariables: {
        fontFamily: FONT,
        fontSize: '13px',
        primaryColor: '#eef2ff', primaryBorderColor: '#6366f1', primaryTextColor: '#1f2937',
        lineColor: '#64748b', secondaryColor: '#f0f9ff', tertiaryColor: '#ffffff',
        noteBkgColor: '#fefce8', noteBorderColor: '#eab308', noteTextColor: '#422006',
        actorBkg: '#eef2ff', actorBorder: '#6366f1', actorTextColor: '#1e1b4b',
        signalColor: '#334155', signalTextColor: '#1f2937',
      },
      flowchart: { curve: 'basis', nodeSpacing: 28, rankSpacing: 56, padding: 10 },
      sequence: { mirrorActors: false, useMaxWidth: false, actorMargin: 36, width: 130, height: 44,
                  messageMargin: 26, boxMargin: 6, noteMargin: 6, wrap: false,
                  actorFontSize: 13, messageFontSize: 13, noteFontSize: 12,
                  actorFontFamily: FONT, messageFontFamily: FONT, noteFontFamily: FONT },
    });
  }
  let mermaidChain = Promise.resolve();
  let renderSeq = 0;
  function renderDiagram(container, text) {
    // One render at a time: Mermaid's renderer is not re-entrant.
    mermaidChain = mermaidChain.then(async () => {
      if (!mermaidReady) {
        container.replaceChildren(el('pre', { class: 'diagram-error', text }));
        return;
      }
      try {
        const { svg } = await window.mermaid.render(`mmd-${++renderSeq}`, text);
        container.innerHTML = svg;  // sanitised by Mermaid (strict)
        const svgEl = container.querySelector('svg');
        if (svgEl) svgEl.setAttribute('role', 'img');  // its name: a11y.js
      } catch (err) {
        container.replaceChildren(el('p', { class: 'diagram-error',
          text: `Could not draw this diagram: ${err && err.message ? err.message : err}` }));
        const stray = document.getElementById(`dmmd-${renderSeq}`);
        if (stray) stray.remove();
      }
    });
    return mermaidChain;
  }

  const topoBox = $('#topology');
  let topoRendered = '';
  let topoPending = '';
  function setTopology(text) { if (text) topoPending = text; }
  setInterval(() => {
    if (topoPending && topoPending !== topoRendered) {
      topoRendered = topoPending;
      // The SVG's text alternative (a11y.js reads data-diagram-label).
      topoBox.dataset.diagramLabel = topologySummary();
      renderDiagram(topoBox, topoRendered).then(() => {
        const svg = topoBox.querySelector('svg');
        if (svg && window.LBLabDiagrams) window.LBLabDiagrams.label(svg, topologySummary());
      });
    }
  }, 1000);
  function topologySummary() {
    const pools = (model.state && model.state.pools) || {};
    const parts = Object.entries(pools).map(([name, p]) => {
      const bs = (p.backends || []).map(b => `${b.name} ${CLASS_TEXT[displayClass(b)]}`).join(', ');
      return `pool ${name} (${p.algorithm}): ${bs || 'no backends'}`;
    });
    return `Topology. ${parts.join('. ')}`;
  }

  // ------------------------------------------------------------------ banners and status pills

  let bannerKey = '';
  function renderBanners() {
    const items = [];
    if (model.feed === 'reconnecting') {
      items.push(['warn', 'Live feed lost', 'The connection to the site dropped; reconnecting…']);
    }
    const silent = model.feed === 'live' && model.lastMessageAt && (Date.now() - model.lastMessageAt > 5000);
    if (silent) {
      items.push(['warn', 'No updates from the bridge',
        BRIDGE_MODE === 'external'
          ? 'Nothing arrived for 5 s. Is the bridge running? (python manage.py bridge --sandbox ' + SANDBOX + ')'
          : 'Nothing arrived for 5 s; the site restarts its bridge when you reload the page.']);
    }
    if (model.proxy.reachable === false) {
      items.push(['bad', 'The proxy does not answer',
        `${model.proxy.detail || 'its admin API is unreachable'}. The dashboard keeps trying every second; the controls that change the proxy will fail until it is back.`]);
    } else if (model.stream.connected === false && model.proxy.reachable) {
      items.push(['warn', 'Event stream interrupted', `${model.stream.detail}. Reconnecting…`]);
    }
    for (const [part, info] of Object.entries(model.parts || {})) {
      if (info && info.alive === false) {
        const isBackend = part !== 'proxy' && part !== 'sandbox';
        items.push(['bad', `Part “${part}” is down`,
          `${info.detail}${isBackend ? ' — restart it from Controls › Faults.' : ''}`]);
      }
    }
    topoBox.classList.toggle('stale', model.proxy.reachable === false);
    const key = JSON.stringify(items);
    if (key === bannerKey) return;
    bannerKey = key;
    const box = $('#banners');
    box.replaceChildren(...items.map(([level, title, text]) =>
      el('div', { class: `banner banner-${level}` },
        el('span', { class: 'icon', 'aria-hidden': 'true', text: '!' }),
        el('div', {}, el('strong', { text: title }), el('p', { text })))));
  }

  function setPill(node, level, text) {
    node.className = `pill pill-${level}`;
    node.textContent = text;
  }
  function renderStatus() {
    const p = model.proxy.reachable;
    setPill($('#proxy-status'), p === null ? 'wait' : p ? 'ok' : 'bad',
      p === null ? 'checking…' : p ? 'reachable' : 'unreachable');
    const f = model.feed;
    const silent = f === 'live' && model.lastMessageAt && (Date.now() - model.lastMessageAt > 5000);
    setPill($('#feed-status'), silent ? 'warn' : f === 'live' ? 'ok' : f === 'polling' ? 'warn' : f === 'reconnecting' ? 'bad' : 'wait',
      silent ? 'stalled' : f === 'live' ? 'live (WebSocket)' : f === 'polling' ? 'polling (no WebSocket)' : f === 'reconnecting' ? 'reconnecting…' : 'connecting…');
    renderBanners();
  }
  setInterval(renderStatus, 1000);

  // ------------------------------------------------------------------ state → controls

  function allBackends() {
    const out = [];
    for (const [pool, p] of Object.entries((model.state && model.state.pools) || {})) {
      for (const b of p.backends || []) out.push({ ...b, pool });
    }
    return out;
  }

  function fillSelect(select, values, { keepFirst = false } = {}) {
    const current = select.value;
    const first = keepFirst ? select.options[0] : null;
    const options = values.map(v => el('option', { value: v, text: v }));
    select.replaceChildren(...(first ? [first] : []), ...options);
    if ([...select.options].some(o => o.value === current)) select.value = current;
  }

  let backendSig = '';
  function applyState(state) {
    if (!state) return;
    model.state = state;
    const pools = Object.keys(state.pools || {});
    const backends = allBackends();
    backends.forEach(b => colorFor(b.name));
    $$('.pool-select').forEach(s => fillSelect(s, pools));
    $$('.backend-select').forEach(s => fillSelect(s, backends.map(b => b.name)));
    fillSelect($('#f-backend'), backends.map(b => b.name), { keepFirst: true });
    fillSelect($('#f-route'), Object.keys(state.routes || {}), { keepFirst: true });
    const desc = Object.entries(state.pools || {}).map(([n, p]) => `pool ${n}: ${p.algorithm}${p.sticky ? ` + sticky ${p.sticky.mode}` : ''}${p.panic ? ' (panic: failing open)' : ''}`);
    $('#current-balancer').textContent = desc.length ? `Now: ${desc.join('; ')}.` : '';
    const algoSelect = $('#algorithm-select');
    const poolSel = $('#panel-balancer .pool-select');
    if (!algoSelect.dataset.touched && poolSel.value && state.pools[poolSel.value]) {
      algoSelect.value = state.pools[poolSel.value].algorithm;
      syncAlgoHelp();
    }
    renderBackendTable(backends);
    prefillHealth();
    syncRestart();
    fillSelect($('#mode-form .listener-select'), Object.keys(state.listeners || {}));
    renderListenerMode();
    renderHowTo();
    ensureCharts(backends.map(b => b.name));
    renderTimeline();
  }

  function renderBackendTable(backends) {
    const body = $('#backend-rows');
    const sig = JSON.stringify(backends.map(b => [b.pool, b.name, b.address, b.weight, displayClass(b), b.health]));
    if (sig === backendSig) return;
    if (body.contains(document.activeElement) && document.activeElement.tagName === 'INPUT') return;
    backendSig = sig;
    if (!backends.length) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: '4', class: 'placeholder', text: 'This pool has no backends.' })));
      return;
    }
    body.replaceChildren(...backends.map(b => {
      const cls = displayClass(b);
      const weightInput = el('input', { type: 'number', name: 'weight', value: String(b.weight), 'aria-label': `Weight of ${b.name}` });
      const weightForm = el('form', { class: 'weight-form' }, weightInput,
        el('button', { type: 'submit', class: 'small', text: 'Set' }));
      weightForm.addEventListener('submit', (ev) => {
        ev.preventDefault();
        postControl('weight', { pool: b.pool, backend: b.name, weight: weightInput.value }, $('#backend-result'))
          .then(({ ok }) => {
            if (ok) return;
            const running = runningWeight(b.pool, b.name);
            weightInput.value = String(running ?? b.weight);
            $('#backend-result').append(el('p', { class: 'hint reverted', text: `${b.name} keeps weight ${running ?? b.weight}.` }));
          });
      });
      const verb = (v, label, title) => {
        const btn = el('button', { type: 'button', class: 'small', text: label, title: `${title} (${b.name})` });
        btn.addEventListener('click', () => {
          if (v === 'remove') {
            const fields = { pool: b.pool, backend: b.name };
            if ($('#remove-drain').checked) fields.drain = 'on';
            postControl('remove-backend', fields, $('#backend-result'));
          } else {
            postControl('intent', { pool: b.pool, backend: b.name, verb: v }, $('#backend-result'));
          }
        });
        return btn;
      };
      const intent = b.intent !== 'active' ? verb('activate', 'Activate', 'Put back in rotation')
        : verb('drain', 'Drain', 'No new requests; in-flight ones finish');
      return el('tr', {},
        el('td', {}, el('span', { class: 'backend-dot', style: `background:${colorFor(b.name)}` }),
          el('strong', { text: b.name }), el('br'), el('span', { class: 'hint mono', text: b.address })),
        el('td', {}, el('span', { class: `state-chip st-${cls}`, text: CLASS_TEXT[cls], title: b.health_reason || '' })),
        el('td', {}, weightForm),
        el('td', {}, el('div', { class: 'btns' }, intent,
          b.intent === 'maintenance' ? null : verb('maintenance', 'Maintenance', 'Out of rotation until activated'),
          verb('remove', 'Remove', 'Remove from the pool'))));
    }));
  }

  const healthForm = $('#health-form');
  let healthEdited = false;
  healthForm.addEventListener('input', () => { healthEdited = true; });
  $('.pool-select', healthForm).addEventListener('change', () => { healthEdited = false; prefillHealth(); });
  function prefillHealth() {
    if (healthEdited || !model.state) return;
    const pool = $('.pool-select', healthForm).value;
    const p = (model.state.pools || {})[pool];
    if (!p) return;
    const h = p.health_check;
    healthForm.elements.enabled.checked = !!h;
    if (h) {
      healthForm.elements.type.value = h.type || 'http';
      healthForm.elements.path.value = h.path || '';
      healthForm.elements.interval.value = h.interval || '';
      healthForm.elements.timeout.value = h.timeout || '';
      healthForm.elements.unhealthy_threshold.value = h.unhealthy_threshold ?? '';
      healthForm.elements.healthy_threshold.value = h.healthy_threshold ?? '';
    }
  }

  // ------------------------------------------------------------------ listeners: L4/L7, TLS mode

  const LAYER = { http: 'L7 · HTTP', tcp: 'L4 · TCP' };
  const TLS_WORD = { none: 'no TLS', terminate: 'TLS terminated here', passthrough: 'TLS passed through' };
  // What each mode cannot do (the proxy's refusals say it again, with the path to change).
  const MODE_HINT = {
    'tcp none': 'At L4 the proxy balances connections, not requests: one backend per connection, bytes relayed unread. It cannot route on host, path or headers, stick with cookies, or hash on a header, cookie or URI; the backend sees the proxy as its client (PROXY protocol tells it the real one).',
    'tcp passthrough': 'Passthrough reads only the server name in the TLS ClientHello (SNI) to pick a pool, then relays the encrypted bytes: it holds no key, sees no path or header, and the backends must speak TLS with their own certificates.',
    'tcp terminate': 'An L4 listener relays bytes; it does not decrypt. Try it to read the proxy\'s reason, or pick L7 to terminate.',
    'http none': 'At L7 the proxy reads every request: it routes on host, path and headers, can stick with cookies, retries, and adds X-Forwarded-For. Plain HTTP: nothing is encrypted.',
    'http terminate': 'The proxy holds the certificates (chosen by SNI), decrypts, and routes on HTTP as usual; backends get plain HTTP unless the pool re-encrypts.',
    'http passthrough': 'Passthrough never decrypts, so an L7 listener would have no HTTP to read. Try it to read the proxy\'s reason, or pick L4.',
  };

  function listenerMode(name) {
    const st = model.state || {};
    const l = (st.listeners || {})[name];
    if (!l) return null;
    const tls = ((st.tls || {})[name]) || { mode: 'none' };
    return { name, listener: l, protocol: l.protocol === 'tcp' ? 'tcp' : 'http', tls: tls.mode || 'none', view: tls };
  }

  function describeMode(m) {
    const l = m.listener;
    const parts = [`${LAYER[m.protocol]} on ${l.bind}`, TLS_WORD[m.tls] || m.tls];
    if (m.protocol === 'tcp') {
      const sni = Object.entries(m.view.sni || {}).map(([n, p]) => `${n} → ${p}`);
      if (sni.length) parts.push(`SNI ${sni.join(', ')}`);
      parts.push(l.pool ? `pool ${l.pool}${sni.length ? ' for other names' : ''}` : 'no default pool');
    } else {
      parts.push(`routes ${(l.routes || []).join(', ') || 'none'}`);
    }
    if (m.tls === 'terminate') {
      const names = [].concat(...(m.view.certificates || []).map(c => c.names || [c.label]));
      if (names.length) parts.push(`certificates for ${names.join(', ')}`);
      if (m.view.client_auth) parts.push(`mTLS ${m.view.client_auth}`);
    }
    const open = (((model.state || {}).connections || {}).by_listener || {})[m.name];
    const words = { tcp: 'TCP', 'tls-passthrough': 'TLS passthrough', websocket: 'WebSocket', tls: 'TLS handshake' };
    const counts = Object.entries(open || {}).filter(([k, n]) => n && k !== 'http').map(([k, n]) => `${n} ${words[k] || k}`);
    if (counts.length) parts.push(`open now: ${counts.join(', ')}`);
    return parts;
  }

  const modeForm = $('#mode-form');
  let modeTouched = false;
  modeForm.addEventListener('change', (e) => {
    if (e.target.name === 'listener') { modeTouched = false; renderListenerMode(); return; }
    modeTouched = true;
    syncModeHint();
  });
  function chosenMode() {
    return { protocol: modeForm.elements.protocol.value, tls: modeForm.elements.tls.value };
  }
  function syncModeHint() {
    const c = chosenMode();
    $('#mode-hint').textContent = MODE_HINT[`${c.protocol} ${c.tls}`] || '';
  }
  function renderListenerMode() {
    const name = $('.listener-select', modeForm).value;
    const m = name && listenerMode(name);
    const now = $('#listener-now');
    const flipLayer = $('#flip-layer');
    const flipTls = $('#flip-tls');
    if (!m) {
      now.textContent = 'No listener yet.';
      flipLayer.disabled = true; flipTls.disabled = true;
      return;
    }
    const [head, ...rest] = describeMode(m);
    now.replaceChildren('Now: ', el('span', { class: 'listener-now-mode', text: head }), ` · ${rest.join(' · ')}`);
    flipLayer.disabled = false;
    const otherLayer = m.protocol === 'http' ? 'tcp' : 'http';
    flipLayer.textContent = otherLayer === 'tcp' ? `Flip ${name} to L4 (TCP)` : `Flip ${name} to L7 (HTTP)`;
    flipLayer.dataset.protocol = otherLayer;
    flipLayer.dataset.tls = m.tls;
    if (m.tls === 'terminate') {
      flipTls.disabled = false;
      flipTls.textContent = 'Pass TLS through instead (L4 + SNI)';
      Object.assign(flipTls.dataset, { protocol: 'tcp', tls: 'passthrough' });
    } else if (m.tls === 'passthrough') {
      flipTls.disabled = false;
      flipTls.textContent = 'Terminate TLS here instead (L7)';
      Object.assign(flipTls.dataset, { protocol: 'http', tls: 'terminate' });
    } else {
      flipTls.disabled = true;
      flipTls.textContent = 'Flip TLS (this listener speaks no TLS)';
    }
    if (!modeTouched) {
      // Untouched, the form shows the current mode, and the hint what it cannot do.
      modeForm.elements.protocol.value = m.protocol;
      modeForm.elements.tls.value = m.tls;
      $('#mode-hint').textContent = MODE_HINT[`${m.protocol} ${m.tls}`] || '';
    }
  }
  for (const btn of [$('#flip-layer'), $('#flip-tls')]) {
    btn.addEventListener('click', () => {
      const name = $('.listener-select', modeForm).value;
      const fields = { listener: name, protocol: btn.dataset.protocol, tls: btn.dataset.tls };
      $('#mode-hint').textContent = MODE_HINT[`${fields.protocol} ${fields.tls}`] || '';
      btn.disabled = true;
      postControl('listener-mode', fields, $('.result', modeForm)).then(({ ok }) => {
        btn.disabled = false;
        if (ok) { modeTouched = false; } else revertAfterRefusal('listener-mode', $('.result', modeForm));
      });
    });
  }

  // How to reach the main listener, in the words of its mode.
  function renderHowTo() {
    const st = model.state;
    if (!st) return;
    const entries = Object.entries(st.listeners || {});
    if (!entries.length) return;
    const url = model.proxyUrl || '';
    const [name, l] = entries.find(([, x]) => url.endsWith(x.bind)) || entries[0];
    const m = listenerMode(name);
    const [host, port] = [l.bind.slice(0, l.bind.lastIndexOf(':')), l.bind.slice(l.bind.lastIndexOf(':') + 1)];
    let cmd;
    if (m.tls === 'none' && m.protocol === 'http') cmd = `curl -i http://${l.bind}/hello`;
    else if (m.tls === 'none') cmd = `nc ${host} ${port}`;
    else {
      const names = Object.keys(m.view.sni || {});
      const certNames = [].concat(...(m.view.certificates || []).map(c => c.names || []));
      const sni = (names.concat(certNames).find(n => !n.startsWith('*.'))) || 'www.lab.test';
      cmd = `curl --cacert var/pki/ca.pem --resolve ${sni}:${port}:${host} https://${sni}:${port}/`;
    }
    const key = `${name}|${cmd}`;
    if (renderHowTo.key === key) return;
    renderHowTo.key = key;
    $('#curl-inline').replaceChildren(' (for example ', el('code', { text: cmd }), ')');
    $('#curl-hint').replaceChildren(`Or send requests yourself (listener ${name}, ${LAYER[m.protocol]}): `, el('code', { text: cmd }));
    const tcp = entries.filter(([n]) => (listenerMode(n) || {}).protocol === 'tcp');
    const ncHint = $('#nc-hint');
    if (ncHint) ncHint.replaceChildren(...(tcp.length
      ? [' Open one: ', el('code', { text: `nc ${tcp[0][1].bind.replace(/:(\d+)$/, ' $1')}` }), ` (listener ${tcp[0][0]} is L4).`]
      : [' Flip a listener to L4 (Controls › Listeners) and open a TCP connection to it, or open a WebSocket through an L7 listener.']));
  }

  // Faults: show the fields the chosen fault uses.
  const faultForm = $('#fault-form');
  const faultSelect = $('#fault-select');
  function syncFault() {
    const f = faultSelect.value;
    $$('.fault-params label', faultForm).forEach(l => { l.hidden = !l.dataset.for.split(' ').includes(f); });
    $('#fault-help').textContent = faultSelect.selectedOptions[0] ? faultSelect.selectedOptions[0].dataset.help : '';
    const submit = $('button[type="submit"]', faultForm);
    submit.className = f === 'clear' ? 'primary' : 'danger';
    submit.textContent = f === 'clear' ? 'Clear faults' : f === 'kill' ? 'Kill backend' : 'Inject fault';
  }
  faultSelect.addEventListener('change', syncFault);
  syncFault();
  function syncRestart() {
    const name = $('.backend-select', faultForm).value;
    $('#restart-form input[name="backend"]').value = name;
    $('#restart-button').textContent = name ? `Restart ${name}` : 'Restart the selected backend';
  }
  $('.backend-select', faultForm).addEventListener('change', syncRestart);
  function syncAlgoHelp() {
    const a = $('#algorithm-select').value;
    $('#algo-help').textContent = ALGO_EXPLAIN[a] ? `${a} ${ALGO_EXPLAIN[a]}` : '';
  }
  $('#algorithm-select').addEventListener('change', (e) => { e.target.dataset.touched = '1'; syncAlgoHelp(); });
  syncAlgoHelp();

  // Tabs (WAI-ARIA tabs pattern: arrows move between tabs).
  const tabs = $$('[role="tab"]');
  function selectTab(tab) {
    tabs.forEach(t => {
      const on = t === tab;
      t.setAttribute('aria-selected', on ? 'true' : 'false');
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
    });
  }
  tabs.forEach((tab, i) => {
    tab.addEventListener('click', () => selectTab(tab));
    tab.addEventListener('keydown', (e) => {
      const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!d) return;
      const next = tabs[(i + d + tabs.length) % tabs.length];
      selectTab(next); next.focus(); e.preventDefault();
    });
  });

  // ------------------------------------------------------------------ controls: POST + result

  // Controls whose refusals carry a headline of their own (what was asked for) above
  // the proxy's list of paths and messages.
  const HEADLINED = new Set(['listener-mode']);

  function showResult(box, data, ok, action) {
    if (!box) return;
    box.className = `result ${ok ? 'ok' : 'err'}`;
    if (ok) {
      const notes = (data.notes || []).filter(Boolean);
      // (replaceChildren would write a null child as the text "null")
      box.replaceChildren(...[el('span', { text: data.message || 'Done.' }),
        notes.length ? el('ul', { class: 'notes' }, notes.map(n => el('li', { text: n }))) : null].filter(Boolean));
      return;
    }
    const errors = (data.errors || []).filter(e => e.message);
    const list = errors.length > 1 || (errors[0] && errors[0].path)
      ? el('ul', {}, errors.map(e => el('li', {}, e.path ? el('code', { text: e.path }) : null, e.path ? ': ' : '', e.message)))
      : null;
    const head = list ? (HEADLINED.has(action) && data.error ? data.error : 'Refused:') : (data.error || 'Failed.');
    box.replaceChildren(...[el('strong', { text: head }), list].filter(Boolean));
  }

  // A refused change must not stay in its input as if it had been applied: the form goes
  // back to what the proxy runs, and the refusal (still shown) says what was wrong.
  const REVERT = {
    algorithm: () => {
      const form = $('#panel-balancer form');
      const algoSelect = $('#algorithm-select');
      const pool = model.state && (model.state.pools || {})[$('.pool-select', form).value];
      delete algoSelect.dataset.touched;
      if (!pool) return;
      algoSelect.value = pool.algorithm;
      syncAlgoHelp();
      const running = pool.balancer || {};
      const knobs = { choices: running.choices, table_size: running.table_size, load_factor: running.load_factor,
                      hash_source: (running.hash_key || {}).source, hash_name: (running.hash_key || {}).name };
      for (const [name, value] of Object.entries(knobs)) {
        const input = form.elements[name];
        if (input && input.value !== '') input.value = value ?? '';
      }
    },
    health: () => { healthEdited = false; prefillHealth(); },
    'listener-mode': () => { modeTouched = false; renderListenerMode(); },
  };
  function revertAfterRefusal(action, box) {
    if (!REVERT[action]) return;
    REVERT[action]();
    if (box) box.append(el('p', { class: 'hint reverted', text: 'The form shows the running values again.' }));
  }
  function runningWeight(pool, name) {
    const p = model.state && (model.state.pools || {})[pool];
    const b = p && (p.backends || []).find(x => x.name === name);
    return b ? b.weight : null;
  }

  async function postControl(action, fields, resultBox, form) {
    const body = form ? new FormData(form) : new FormData();
    if (!form) {
      body.append('csrfmiddlewaretoken', csrfToken());
      for (const [k, v] of Object.entries(fields || {})) body.append(k, v);
    }
    const buttons = form ? $$('button', form) : [];
    buttons.forEach(b => { b.disabled = true; });
    let data; let ok = false;
    try {
      const resp = await fetch(`${API}control/${action}`, {
        method: 'POST', body, credentials: 'same-origin',
        headers: { 'X-CSRFToken': csrfToken(), Accept: 'application/json' },
      });
      const text = await resp.text();
      try { data = JSON.parse(text); } catch { data = { error: `HTTP ${resp.status}: ${text.slice(0, 200)}` }; }
      ok = resp.ok && data.ok !== false;
    } catch (err) {
      data = { error: `The site did not answer: ${err.message}` };
    } finally {
      buttons.forEach(b => { b.disabled = false; });
    }
    showResult(resultBox, data, ok, action);
    const firstError = (data.errors || []).find(e => e.message);
    logLine(ok ? data.message
      : `Refused: ${firstError && firstError.path ? `${firstError.path}: ${firstError.message}` : data.error}${(data.errors || []).length > 1 ? ` (+${data.errors.length - 1} more)` : ''}`,
      ok ? 'ok' : 'bad');
    if (ok && data.state) { applyState(data.state); }
    if (ok && data.run) { pollTraffic(true); }
    return { ok, data };
  }

  $$('form.control-form').forEach(form => {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const action = form.dataset.action;
      postControl(action, null, $('.result', form), form).then(({ ok }) => {
        if (!ok) revertAfterRefusal(action, $('.result', form));
        if (ok && action === 'health') healthEdited = false;
        if (ok && action === 'algorithm') delete $('#algorithm-select').dataset.touched;
      });
    });
  });
  $('#traffic-stop').addEventListener('click', () => {
    postControl('traffic-stop', null, $('#traffic-form .result'), $('#traffic-stop-form'));
  });

  // Traffic progress.
  let trafficTimer = null;
  let trafficErrorShown = false;
  async function pollTraffic(soon = false) {
    clearTimeout(trafficTimer);
    let next = 5000;
    try {
      const resp = await fetch(`${API}traffic`, { credentials: 'same-origin' });
      const data = await resp.json();
      if (resp.ok) {
        const state = data.state || 'idle';
        const progress = Math.max(0, Math.min(1, Number(data.progress) || 0));
        $('#traffic-bar').value = progress;
        const stats = data.stats || {};
        const extra = [];
        if (stats.requests !== undefined) extra.push(`${stats.requests} requests`);
        if (stats.failures !== undefined) extra.push(`${stats.failures} failures`);
        if (stats.rps !== undefined) extra.push(`${Number(stats.rps).toFixed(1)} req/s`);
        $('#traffic-state').textContent = `${state}${state === 'running' ? ` · ${Math.round(progress * 100)}%` : ''}${extra.length ? ' · ' + extra.join(', ') : ''}`;
        if (state === 'running' || state === 'starting') next = 1000;
      } else if (!trafficErrorShown) {
        trafficErrorShown = true;
        $('#traffic-state').textContent = data.error || `unavailable (HTTP ${resp.status})`;
        next = 15000;
      }
    } catch (err) {
      $('#traffic-state').textContent = `unavailable: ${err.message}`;
      next = 15000;
    }
    trafficTimer = setTimeout(pollTraffic, soon ? 500 : next);
  }

  // ------------------------------------------------------------------ decision stream

  const stream = {
    pending: [], shown: [], seen: new Set(), paused: false, speed: 0,
    filters: { backend: '', status: '', route: '', kind: '' },
    total: 0, bridgeDropped: 0, localDropped: 0, fresh: new Set(),
  };
  const MAX_PENDING = 5000;
  const MAX_SHOWN = 1000;
  const MAX_ROWS = 200;
  const streamList = $('#stream');

  function kindOf(ev) {
    if (ev.type === 'connection') return ev.kind === 'udp' ? 'udp' : ev.kind === 'h2' ? 'h2' : 'connection';
    if (ev.protocol === 'h2') return 'h2';
    return ev.status === 101 ? 'websocket' : 'request';
  }

  function matches(ev) {
    const f = stream.filters;
    if (f.kind && kindOf(ev) !== f.kind) return false;
    if (f.backend && ev.backend !== f.backend) return false;
    if (f.route && ev.route !== f.route) return false;
    if (f.status === 'proxy') return !!ev.proxy_error;
    if (f.status && statusClass(ev) !== f.status) return false;
    return true;
  }

  function ingest(decisions, { history = false } = {}) {
    for (const ev of decisions || []) {
      const id = eventId(ev);
      if (stream.seen.has(id)) continue;
      stream.seen.add(id);
      stream.total += 1;
      if (history) { stream.shown.push(ev); continue; }
      stream.pending.push(ev);
    }
    if (stream.pending.length > MAX_PENDING) {
      const drop = stream.pending.length - MAX_PENDING;
      stream.pending.splice(0, drop);
      stream.localDropped += drop;
    }
    if (stream.seen.size > 20000) stream.seen = new Set(stream.shown.concat(stream.pending).map(eventId));
    if (history) { trimShown(); renderStream(); }
    // Show one request's story at once, so the page never opens on empty panels.
    if (!model.selectedRequest) {
      const first = stream.shown[stream.shown.length - 1] || stream.pending[0];
      if (first) selectRequest(first);
    }
  }

  function trimShown() {
    if (stream.shown.length > MAX_SHOWN) stream.shown.splice(0, stream.shown.length - MAX_SHOWN);
  }

  function reveal(ev, announce) {
    stream.shown.push(ev);
    trimShown();
    // Rows flash only when revealed one by one: at live speed it would be noise.
    if (!reducedMotion.matches && (stream.speed > 0 || stream.paused)) stream.fresh.add(eventId(ev));
    if (announce && ev.type === 'connection') {
      const what = ev.kind === 'udp' ? 'UDP flow' : ev.kind === 'h2' ? 'HTTP/2 connection' : 'L4 connection';
      logLine(`${what} ${ev.client} → ${ev.backend || (ev.kind === 'h2' ? 'its streams' : 'no backend')} (${whyShort(ev)}), lasted ${fmtMs(ev.duration_ms)}`,
        ev.error ? 'bad' : '', ev.ts);
    } else if (announce) {
      const who = ev.backend ? `→ ${ev.backend}` : '→ no backend';
      const why = whyShort(ev);
      logLine(`${ev.method || 'TCP'} ${ev.path || ''} ${who}${why ? ' (' + why + ')' : ''}: ${ev.status || ev.error || '—'} in ${fmtMs(ev.latency_ms ?? ev.duration_ms)}`,
        (ev.status >= 500 || ev.proxy_error) ? 'bad' : '', ev.ts);
    }
  }

  // Step: reveal pending decisions up to and including the next one the filter shows.
  function stepOnce(announce = true) {
    while (stream.pending.length) {
      const ev = stream.pending.shift();
      const shownNow = matches(ev);
      reveal(ev, announce && shownNow);
      if (shownNow) return true;
    }
    return false;
  }

  let lastRender = 0;
  let lastStep = 0;
  function playLoop(now) {
    if (!stream.paused) {
      if (stream.speed === 0) {
        if (stream.pending.length) {
          while (stream.pending.length) reveal(stream.pending.shift(), false);
        }
      } else if (now - lastStep >= 1000 / stream.speed) {
        lastStep = now;
        stepOnce(true);
      }
    }
    if (now - lastRender > 200) { lastRender = now; followNewest(now); renderStream(); }
    requestAnimationFrame(playLoop);
  }

  let renderedKey = '';
  function renderStream() {
    const rows = [];
    for (let i = stream.shown.length - 1; i >= 0 && rows.length < MAX_ROWS; i--) {
      const ev = stream.shown[i];
      if (matches(ev)) rows.push(ev);
    }
    const key = rows.length ? `${eventId(rows[0])}|${rows.length}|${model.selectedRequest ? eventId(model.selectedRequest) : ''}|${JSON.stringify(stream.filters)}` : 'empty';
    if (key !== renderedKey) {
      renderedKey = key;
      const keepScroll = streamList.scrollTop;
      streamList.replaceChildren(...rows.map(rowFor));
      streamList.scrollTop = keepScroll;
      stream.fresh.clear();
    }
    $('#stream-empty').hidden = stream.total > 0;
    const waiting = stream.pending.length;
    const parts = [`${stream.total} seen`, `showing ${rows.length}`];
    if (waiting) parts.push(`${waiting} waiting${stream.paused ? ' (paused)' : ''}`);
    if (stream.bridgeDropped) parts.push(`${stream.bridgeDropped} skipped by the bridge (it sends the newest 50 per tick)`);
    if (stream.localDropped) parts.push(`${stream.localDropped} dropped while paused`);
    $('#stream-counters').textContent = stream.total ? parts.join(' · ') : 'No requests or connections yet.';
  }

  function rowFor(ev) {
    const sc = statusClass(ev);
    const selected = model.selectedRequest && eventId(model.selectedRequest) === eventId(ev);
    const isConn = ev.type === 'connection';
    const h2conn = isConn && ev.kind === 'h2';
    // The row's visible text is its accessible name (time, request, backend, status, time taken, why).
    const btn = el('button', { type: 'button', 'aria-current': selected ? 'true' : null },
      el('span', { class: 't', text: fmtTime(ev.ts) }),
      el('span', { class: 'req' }, ev.protocol === 'h2' ? el('span', { class: 'proto-chip', text: ev.stream_id ? `h2 #${ev.stream_id}` : 'h2' }) : null,
        isConn ? `${connWord(ev)} ${ev.client}` : `${ev.method} ${ev.path}`),
      el('span', { class: 'to' }, ev.route ? `${ev.route} → ` : (isConn && ev.pool ? `${ev.pool} → ` : ''),
        ev.backend ? el('span', { class: 'backend-dot', style: `background:${colorFor(ev.backend)}` }) : null,
        h2conn ? streamsText(ev.streams || 0) : el('b', { text: ev.backend || 'none' })),
      el('span', {}, el('span', { class: `status s${sc}${ev.proxy_error ? ' sproxy' : ''}`,
        title: ev.proxy_error ? 'made by the proxy' : isConn ? (CLOSED_BY[ev.closed_by] || '') : '', text: isConn ? (ev.error && ev.closed_by !== 'idle' ? 'err' : 'ok') : (ev.status || '—') }),
        ev.grpc ? el('span', { class: `grpc-chip${Number(ev.grpc.status) ? ' bad' : ''}`, text: `gRPC ${ev.grpc.status}` }) : null,
        ev.proxy_error ? el('span', { class: 'vh', text: ' made by the proxy' }) : null),
      el('span', { class: 'lat', text: fmtMs(ev.latency_ms ?? ev.duration_ms) }),
      el('span', { class: 'why', text: whyShort(ev) }));
    btn.addEventListener('click', () => selectRequest(ev, { pin: true }));
    return el('li', { class: stream.fresh.has(eventId(ev)) ? 'fresh' : '' }, btn);
  }

  const pauseBtn = $('#pause');
  pauseBtn.addEventListener('click', () => {
    stream.paused = !stream.paused;
    pauseBtn.setAttribute('aria-pressed', stream.paused ? 'true' : 'false');
    pauseBtn.textContent = stream.paused ? 'Resume' : 'Pause';
    $('#step').disabled = !stream.paused;
    logLine(stream.paused ? 'Stream paused: use Step to reveal one decision at a time.' : 'Stream resumed.');
  });
  $('#step').addEventListener('click', () => {
    if (!stepOnce(true)) logLine('No more decisions waiting; send more traffic.');
    renderStream();
  });
  $('#speed').addEventListener('change', (e) => { stream.speed = Number(e.target.value) || 0; });
  for (const [id, key] of [['#f-backend', 'backend'], ['#f-status', 'status'], ['#f-route', 'route'], ['#f-kind', 'kind']]) {
    $(id).addEventListener('change', (e) => { stream.filters[key] = e.target.value; renderStream(); });
  }

  // Live mode announces a summary every 10 s instead of every request.
  let summaryCount = 0;
  let summaryByBackend = {};
  let summaryErrors = 0;
  setInterval(() => {
    if (stream.speed === 0 && !stream.paused && summaryCount) {
      const per = Object.entries(summaryByBackend).map(([b, n]) => `${b} ${n}`).join(', ');
      logLine(`Last 10 s: ${summaryCount} requests (${per || 'none reached a backend'})${summaryErrors ? `, ${summaryErrors} errors` : ''}.`, summaryErrors ? 'warn' : '');
    }
    summaryCount = 0; summaryByBackend = {}; summaryErrors = 0;
  }, 10000);
  function countForSummary(stats) {
    const totals = (stats && stats.totals) || {};
    summaryCount += totals.requests || 0;
    summaryErrors += totals.errors || 0;
    for (const [b, s] of Object.entries((stats && stats.backends) || {})) {
      if (s.requests) summaryByBackend[b] = (summaryByBackend[b] || 0) + s.requests;
    }
  }

  // ------------------------------------------------------------------ detail panel

  const detailBox = $('#detail');
  const requestDiagram = $('#request-diagram');

  // "Why this backend?" follows the newest decision the stream shows (through its filters),
  // at most once a second so its diagram can be read, until the learner selects a row: then
  // that decision is pinned, and "Back to live" follows the newest again.
  const FOLLOW_EVERY_MS = 1000;
  let lastFollow = 0;
  function newestShown() {
    for (let i = stream.shown.length - 1; i >= 0; i--) if (matches(stream.shown[i])) return stream.shown[i];
    return null;
  }
  function followNewest(now) {
    if (model.pinned || now - lastFollow < FOLLOW_EVERY_MS) return;
    const newest = newestShown();
    if (newest && (!model.selectedRequest || eventId(newest) !== eventId(model.selectedRequest))) {
      lastFollow = now;
      selectRequest(newest);
    }
  }
  function setPinned(pinned) {
    model.pinned = pinned;
    $('#detail-live').hidden = !pinned;
    $('#detail-mode').classList.toggle('pinned', pinned);
    $('#detail-mode-text').textContent = pinned
      ? 'Pinned: the decision you selected stays here while new ones arrive.'
      : 'Following the newest decision, live. Select a row in the stream to pin it here.';
  }
  $('#detail-live').addEventListener('click', () => {
    setPinned(false);
    lastFollow = 0;
    followNewest(performance.now());
  });

  function selectRequest(ev, { pin = false } = {}) {
    if (pin) setPinned(true);
    model.selectedRequest = ev;
    renderedKey = '';
    renderStream();
    renderDetail(ev);
    const isConn = ev.type === 'connection';
    requestDiagram.replaceChildren(el('p', { class: 'placeholder', text: isConn ? 'Drawing the connection’s path…' : 'Drawing the request’s path…' }));
    const url = isConn && ev.connection_id ? `${API}connections/${encodeURIComponent(ev.connection_id)}/diagram`
      : ev.type === 'request' && ev.request_id ? `${API}requests/${encodeURIComponent(ev.request_id)}/diagram` : null;
    if (!url) {
      requestDiagram.replaceChildren();
      return;
    }
    fetch(url, { credentials: 'same-origin' })
      .then(r => r.json().then(d => ({ ok: r.ok, d })))
      .then(({ ok, d }) => {
        if (model.selectedRequest !== ev) return;
        if (!ok) { requestDiagram.replaceChildren(el('p', { class: 'placeholder', text: d.error || 'No diagram.' })); return; }
        renderDiagram(requestDiagram, d.diagram);
      })
      .catch(err => requestDiagram.replaceChildren(el('p', { class: 'diagram-error', text: err.message })));
  }

  function renderDetail(ev) {
    const facts = [];
    const fact = (k, v) => { if (v !== undefined && v !== null && v !== '') facts.push(el('dt', { text: k }), el('dd', {}, v)); };
    const isConn = ev.type === 'connection';
    fact(isConn ? 'Connection id' : 'Request id', el('code', { text: ev.request_id || ev.connection_id || '—' }));
    fact('Client', el('code', { text: ev.client || '' }));
    fact('Listener', isConn && ev.kind !== 'h2' ? `${ev.listener} (L4)` : ev.listener);
    if (isConn) fact('Kind', { tcp: 'TCP relay', 'tls-passthrough': 'TLS passthrough (not decrypted)', tls: 'TLS handshake that failed',
      udp: 'UDP flow: every datagram from one client address and port', h2: 'HTTP/2 connection: many requests, one stream each' }[ev.kind] || ev.kind);
    if (ev.protocol === 'h2') fact('Protocol', `HTTP/2${ev.stream_id ? `, stream ${ev.stream_id}` : ''}`);
    if (ev.grpc) fact('gRPC', grpcText(ev.grpc));
    if (ev.kind === 'h2') fact('Streams', String(ev.streams || 0));
    fact('Host', ev.host);
    if (ev.tls) {
      const t = ev.tls;
      const bits = [t.mode === 'passthrough' ? 'passthrough' : 'terminated'];
      if (t.sni) bits.push(`SNI ${t.sni}`);
      if (t.matched) bits.push(`matched: ${t.matched}`);
      if (t.certificate) bits.push(`certificate ${t.certificate}`);
      if (t.version) bits.push(t.version);
      if (t.client_cert) bits.push(`client cert ${typeof t.client_cert === 'object' ? (t.client_cert.subject || JSON.stringify(t.client_cert)) : t.client_cert}`);
      fact('TLS', bits.join(' · '));
    }
    if (ev.backend_tls) fact('TLS to backend', `${ev.backend_tls.server_name || ''} ${ev.backend_tls.verified === false ? '(NOT verified)' : '(verified)'} ${ev.backend_tls.version || ''}`.trim());
    fact('Route', ev.route || (ev.type === 'request' ? 'none matched' : null));
    fact('Pool', ev.pool);
    fact('Backend', ev.backend || 'none');
    if (isConn) {
      fact('Closed', `${CLOSED_BY[ev.closed_by] || 'closed'}${ev.error ? `: ${ev.error}` : ''}`);
      fact('Lasted', fmtMs(ev.duration_ms));
      fact('Bytes', ev.kind === 'h2' ? `${fmtBytes(ev.bytes_in || 0)} from the client · ${fmtBytes(ev.bytes_out || 0)} to the client`
        : `${fmtBytes(ev.bytes_in || 0)} client → backend · ${fmtBytes(ev.bytes_out || 0)} backend → client`);
      if (ev.connect_ms !== null && ev.connect_ms !== undefined) fact('Connect', fmtMs(ev.connect_ms));
      if (ev.proxy_protocol) fact('PROXY protocol', `${ev.proxy_protocol}: the backend learns the real client address from a header`);
    } else {
      fact('Status', el('span', {}, `${ev.status || '—'}${ev.status === 101 ? ' (switched protocols: a WebSocket tunnel)' : ''}${ev.proxy_error ? ' (made by the proxy: ' : ''}`,
        ev.proxy_error ? el('a', { href: ERRORS_URL, text: 'the error contract' }) : null, ev.proxy_error ? ')' : ''));
      fact('Latency', fmtMs(ev.latency_ms));
      if (ev.status === 101) fact('Bytes', `${fmtBytes(ev.bytes_in || 0)} client → backend · ${fmtBytes(ev.bytes_out || 0)} backend → client`);
    }
    if (ev.termination) {
      fact('Termination', el('span', {}, `${explainTermination(ev.termination)} (code ${ev.termination}) · `,
        el('a', { href: `${ERRORS_URL}#termination-codes`, text: 'what the codes mean' })));
    }
    if (ev.error && !isConn) fact('Error', ev.error);
    if (ev.timings && Object.keys(ev.timings).length) {
      fact('Timings', Object.entries(ev.timings).map(([k, v]) => `${k.replace(/_/g, ' ')} ${fmtMs(v)}`).join(' · '));
    }

    const why = [];
    if (isConn && ev.kind === 'udp' && ev.backend) {
      why.push(el('p', { text: `UDP has no connections, so the proxy keeps a flow per client address and port: the balancer picked once, for the first datagram, and every later datagram of ${ev.client} went to ${ev.backend}; its replies came back the same way. ${ev.closed_by === 'idle' ? 'The flow ended because nothing passed for the idle time (UDP has no close).' : ''}`.trim() }));
    } else if (isConn && ev.kind === 'h2') {
      why.push(el('p', { text: `One HTTP/2 connection carried ${streamsText(ev.streams || 0)}. Each stream is a request of its own: routed and balanced one by one (they are in the stream, marked h2), so one connection's requests spread over the backends. An L4 listener would have sent them all to one backend.` }));
    } else if (isConn && ev.backend) {
      why.push(el('p', { text: `At L4 the balancer picks once per connection: every byte of this connection went to ${ev.backend}, unread.` }));
      if (!ev.bytes_in && !ev.bytes_out && !ev.error) {
        why.push(el('p', { text: 'Nothing was sent either way: the client connected and closed. A port check (a liveness probe, a scanner) looks like this, and at L4 it still costs a pick and a backend connection.' }));
      }
    }
    if (ev.algorithm) {
      why.push(el('p', {}, el('strong', { text: ev.algorithm }), ' ', ALGO_EXPLAIN[ev.algorithm] || ''));
    }
    if (ev.inputs && Object.keys(ev.inputs).length) {
      why.push(el('p', {}, 'Its inputs for this pick: ', el('code', { text: inputsText(ev.inputs) })));
    }
    if (ev.sticky) {
      why.push(el('p', { text: ev.sticky.hit
        ? `Sticky (${ev.sticky.mode}) hit: the client is stuck to ${ev.sticky.target}, so the algorithm was not asked.${ev.sticky.reason ? ' ' + ev.sticky.reason : ''}`
        : `Sticky (${ev.sticky.mode}) miss: ${ev.sticky.reason || 'no sticky target yet'}; the algorithm picked, and the client is now stuck to the result.` }));
    }
    if (!ev.backend && ev.pool) why.push(el('p', { text: `No backend could be picked: ${ev.error || 'none was eligible'}.` }));
    if (ev.retries && ev.retries.length) {
      why.push(el('p', {}, `Retried ${ev.retries.length} time(s): `,
        ev.retries.map((r, i) => `${i ? '; ' : ''}${r.backend}: ${r.error}`).join('')));
    }

    const cands = (ev.candidates || []);
    const table = cands.length ? el('table', { class: 'cands' },
      el('caption', { class: 'hint', text: 'Candidates as the balancer saw them (only eligible ones can be picked)' }),
      el('thead', {}, el('tr', {}, ['name', 'health', 'intent', 'eligible', 'weight', 'in flight', 'conns'].map(h => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, cands.map(c => el('tr', { class: c.name === ev.backend ? 'chosen' : '' },
        el('td', {}, el('span', { class: 'backend-dot', style: `background:${colorFor(c.name)}` }), c.name, c.name === ev.backend ? ' ◀ chosen' : ''),
        el('td', { text: c.health }), el('td', { text: c.intent }),
        el('td', { text: c.eligible ? '✓' : '✗' }), el('td', { text: c.weight }),
        el('td', { text: c.outstanding }), el('td', { text: c.connections }))))) : null;

    detailBox.replaceChildren(
      el('p', { class: 'detail-title', text: ev.type === 'connection'
        ? (ev.kind === 'h2' ? `HTTP/2 ${ev.client} · ${streamsText(ev.streams || 0)}` : `${connWord(ev)} ${ev.client} → ${ev.backend || 'no backend'}`)
        : `${ev.protocol === 'h2' ? 'h2 ' : ''}${ev.method} ${ev.path} → ${ev.backend || 'no backend'}${ev.grpc ? ` · ${grpcText(ev.grpc)}` : ''}` }),
      why.length ? el('div', { class: 'explain' }, why) : null,
      table,
      el('dl', { class: 'facts' }, facts));
  }

  // ------------------------------------------------------------------ charts (uPlot)

  const WINDOW_S = 120;
  const series = { xs: [], rps: {}, p50: {}, p99: {}, eps: {}, inflight: {} };
  let chartNames = [];
  const charts = {};
  const chartDefs = [
    ['rps', '#chart-rps', 'req/s'],
    ['lat', '#chart-lat', 'ms'],
    ['err', '#chart-err', 'err/s'],
    ['inflight', '#chart-inflight', 'requests'],
  ];

  function chartWidth(node) { return Math.max(220, node.clientWidth || node.parentElement.clientWidth || 300); }

  function makeChart(kind, sel) {
    const node = $(sel);
    const s = [{}];
    for (const name of chartNames) {
      if (kind === 'lat') {
        s.push({ label: `${name} p50`, stroke: colorFor(name), width: 2, spanGaps: true, points: { show: false } });
        s.push({ label: `${name} p99`, stroke: colorFor(name), width: 1.5, dash: [5, 4], spanGaps: true, points: { show: false } });
      } else {
        s.push({ label: name, stroke: colorFor(name), width: 2, spanGaps: true, points: { show: false } });
      }
    }
    const opts = {
      width: chartWidth(node), height: 170,
      series: s,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(kind === 'err' ? 1 : 1, max * 1.15 || 1)] } },
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#f1f5f9' }, ticks: { stroke: '#e5e7eb' }, font: '11px system-ui',
          values: (u, splits) => splits.map(v => fmtTime(v).slice(0, 8)), space: 70 },
        { stroke: '#6b7280', grid: { stroke: '#f1f5f9' }, ticks: { stroke: '#e5e7eb' }, size: 46, font: '11px system-ui' },
      ],
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
    };
    node.replaceChildren();
    return new window.uPlot(opts, chartData(kind), node);
  }

  function chartData(kind) {
    const data = [series.xs];
    for (const name of chartNames) {
      if (kind === 'lat') { data.push(series.p50[name] || []); data.push(series.p99[name] || []); }
      else data.push((kind === 'rps' ? series.rps : kind === 'err' ? series.eps : series.inflight)[name] || []);
    }
    return data;
  }

  function ensureCharts(names) {
    if (typeof window.uPlot === 'undefined') return;
    const merged = Array.from(new Set([...chartNames, ...names]));
    if (merged.length === chartNames.length && Object.keys(charts).length) return;
    chartNames = merged;
    for (const name of chartNames) {
      for (const key of ['rps', 'p50', 'p99', 'eps', 'inflight']) {
        if (!series[key][name]) series[key][name] = series.xs.map(() => null);
      }
    }
    for (const [kind, sel] of chartDefs) {
      if (charts[kind]) charts[kind].destroy();
      charts[kind] = makeChart(kind, sel);
    }
    $('#chart-legend').replaceChildren(
      ...chartNames.map(n => el('li', {}, el('span', { class: 'line', style: `border-color:${colorFor(n)}` }), n)),
      el('li', { class: 'hint' }, el('span', { class: 'line dash', style: 'border-color:#6b7280' }), 'p99'));
  }

  function pushStats(ts, stats) {
    if (!stats || !stats.backends) return;
    ensureCharts(Object.keys(stats.backends));
    series.xs.push(ts);
    for (const name of chartNames) {
      const s = stats.backends[name];
      series.rps[name].push(s ? s.rps : null);
      series.p50[name].push(s ? s.p50_ms : null);
      series.p99[name].push(s ? s.p99_ms : null);
      series.eps[name].push(s ? s.eps : null);
      series.inflight[name].push(s ? s.in_flight : null);
    }
    const cutoff = ts - WINDOW_S;
    let drop = 0;
    while (drop < series.xs.length && series.xs[drop] < cutoff) drop++;
    if (drop) {
      series.xs.splice(0, drop);
      for (const key of ['rps', 'p50', 'p99', 'eps', 'inflight']) {
        for (const name of chartNames) series[key][name].splice(0, drop);
      }
    }
  }

  let lastChartDraw = 0;
  function drawCharts() {
    const now = performance.now();
    if (now - lastChartDraw < 500) return;
    lastChartDraw = now;
    for (const [kind] of chartDefs) if (charts[kind]) charts[kind].setData(chartData(kind));
  }

  if (typeof ResizeObserver !== 'undefined') {
    const ro = new ResizeObserver(() => {
      for (const [kind, sel] of chartDefs) if (charts[kind]) charts[kind].setSize({ width: chartWidth($(sel)), height: 170 });
    });
    chartDefs.forEach(([, sel]) => ro.observe($(sel)));
  }

  // ------------------------------------------------------------------ health timeline

  const TIMELINE_S = 300;
  function addHealthEvents(events) {
    const known = new Set(model.healthEvents.map(e => `${e.ts}|${e.pool}|${e.backend}|${e.kind}|${e.new}`));
    for (const e of events || []) {
      if (e.type !== 'state_change') continue;
      const key = `${e.ts}|${e.pool}|${e.backend}|${e.kind}|${e.new}`;
      if (known.has(key)) continue;  // a reconnect replays the recent past
      known.add(key);
      model.healthEvents.push(e);
    }
    model.healthEvents.sort((a, b) => a.ts - b.ts);
    const cutoff = Date.now() / 1000 - 3600;
    while (model.healthEvents.length && model.healthEvents[0].ts < cutoff) model.healthEvents.shift();
  }

  function renderTimeline() {
    const box = $('#timeline');
    const now = Date.now() / 1000;
    const start = now - TIMELINE_S;
    const backends = allBackends();
    if (!backends.length) {
      box.replaceChildren(el('p', { class: 'placeholder', text: 'No backends yet.' }));
      return;
    }
    const rows = backends.map(b => {
      // Walk back from the current state through the changes, newest first.
      let cur = { health: b.health, intent: b.intent, ejected: !!b.ejected };
      const changes = model.healthEvents.filter(e => e.backend === b.name && e.pool === b.pool);
      const segs = [];
      let end = now;
      for (let i = changes.length - 1; i >= 0 && end > start; i--) {
        const c = changes[i];
        segs.push([Math.max(c.ts, start), end, displayClass(cur)]);
        end = c.ts;
        if (c.kind === 'health') cur = { ...cur, health: c.old };
        else if (c.kind === 'intent') cur = { ...cur, intent: c.old };
        else if (c.kind === 'ejection') cur = { ...cur, ejected: c.old === 'ejected' };
      }
      if (end > start) segs.push([start, end, displayClass(cur)]);
      const recent = changes.filter(c => c.ts >= start).length;
      const selected = model.selectedBackend && model.selectedBackend.name === b.name;
      const bar = el('div', { class: 'tl-bar' }, segs.map(([s, e, cls]) => el('div', {
        class: `tl-seg tl-${cls === 'draining' || cls === 'maintenance' ? 'initial' : cls}`,
        style: `left:${((s - start) / TIMELINE_S * 100).toFixed(2)}%;width:${Math.max(0.3, (e - s) / TIMELINE_S * 100).toFixed(2)}%`,
        title: `${CLASS_TEXT[cls]} from ${fmtTime(s).slice(0, 8)} to ${e >= now - 1 ? 'now' : fmtTime(e).slice(0, 8)}`,
      })));
      const row = el('button', { type: 'button', class: 'tl-row', 'aria-current': selected ? 'true' : null,
        'aria-label': `${b.name}: ${CLASS_TEXT[displayClass(b)]} now, ${recent} change${recent === 1 ? '' : 's'} in the last 5 minutes. Show its health episode.` },
        el('span', { class: 'tl-name' }, el('span', { class: 'backend-dot', style: `background:${colorFor(b.name)}` }), b.name), bar);
      row.addEventListener('click', () => selectBackend(b));
      return row;
    });
    box.replaceChildren(...rows);
  }
  setInterval(renderTimeline, 2000);

  let episodeTimer = null;
  let episodeText = '';
  function selectBackend(b) {
    model.selectedBackend = { name: b.name, pool: b.pool };
    episodeText = '';
    renderTimeline();
    $('#episode-hint').textContent = `Backend ${b.name} of pool ${b.pool}: probes, failures and state changes, refreshed every 3 s.`;
    $('#episode-diagram').replaceChildren(el('p', { class: 'placeholder', text: 'Reading its recent probes…' }));
    loadEpisode();
  }
  async function loadEpisode() {
    clearTimeout(episodeTimer);
    const sel = model.selectedBackend;
    if (!sel) return;
    try {
      const resp = await fetch(`${API}health/${encodeURIComponent(sel.pool)}/${encodeURIComponent(sel.name)}/diagram`, { credentials: 'same-origin' });
      const data = await resp.json();
      if (model.selectedBackend !== sel) return;
      if (!resp.ok) {
        $('#episode-diagram').replaceChildren(el('p', { class: 'placeholder', text: data.error || 'No diagram.' }));
      } else if (data.diagram !== episodeText) {
        episodeText = data.diagram;
        await renderDiagram($('#episode-diagram'), data.diagram);
      }
    } catch (err) {
      $('#episode-diagram').replaceChildren(el('p', { class: 'diagram-error', text: err.message }));
    }
    episodeTimer = setTimeout(loadEpisode, 3000);
  }

  // ------------------------------------------------------------------ open connections

  // id -> { c: the proxy's view (GET /connections or a connection_open event),
  //         at: when the page got it (ms), from: 'poll' | 'event' }
  const conns = new Map();
  const closedAt = new Map();  // id -> when its closing event came (a late poll must not revive it)
  let connsUnavailable = '';
  const KIND_TEXT = { tcp: 'TCP', 'tls-passthrough': 'TLS passthrough', websocket: 'WebSocket', h2: 'HTTP/2', udp: 'UDP flow' };

  function applyConnections(data) {
    if (!data) return;
    if (data.unavailable) { connsUnavailable = data.unavailable; renderConnections(); return; }
    connsUnavailable = '';
    const now = Date.now();
    const seen = new Set();
    for (const [id, at] of closedAt) if (now - at > 5000) closedAt.delete(id);
    for (const c of data.connections || []) {
      if (closedAt.has(c.connection_id)) continue;
      seen.add(c.connection_id);
      conns.set(c.connection_id, { c, at: now, from: 'poll' });
    }
    // A connection announced by its event moments ago may be younger than this poll.
    for (const [id, entry] of conns) {
      if (!seen.has(id) && !(entry.from === 'event' && now - entry.at < 2500)) conns.delete(id);
    }
    renderConnections();
  }

  function connectionOpened(events) {
    const now = Date.now();
    for (const e of events || []) {
      if (conns.has(e.connection_id) || closedAt.has(e.connection_id)) continue;
      conns.set(e.connection_id, { from: 'event', at: now, c: {
        connection_id: e.connection_id, kind: e.kind, listener: e.listener, client: e.client,
        pool: e.pool, backend: e.backend, age_s: Math.max(0, now / 1000 - e.ts), idle_s: 0,
        bytes_in: 0, bytes_out: 0, sni: e.tls && e.tls.sni,
        ...(e.kind === 'udp' ? { datagrams_in: 0, datagrams_out: 0 } : {}) } });
    }
    if ((events || []).length && (events.length <= 3)) {
      for (const e of events) {
        logLine(`${e.kind === 'udp' ? 'UDP flow' : `${KIND_TEXT[e.kind] || e.kind} connection`} opened: ${e.client} → ${e.backend} (pool ${e.pool}, ${e.algorithm}${e.tls && e.tls.sni ? `, SNI ${e.tls.sni}` : ''})`, '', e.ts);
      }
    } else if ((events || []).length) {
      logLine(`${events.length} connections opened.`);
    }
    renderConnections();
  }

  function connectionsClosed(decisions) {
    let changed = false;
    for (const ev of decisions || []) {
      const id = ev.type === 'connection' ? ev.connection_id : (ev.status === 101 ? ev.request_id : null);
      if (!id) continue;
      closedAt.set(id, Date.now());
      if (conns.delete(id)) changed = true;
    }
    if (changed) renderConnections();
  }

  let connsKey = '';
  function renderConnections() {
    const body = $('#conn-rows');
    const list = [...conns.values()].sort((a, b) => (b.c.age_s + (Date.now() - b.at) / 1000) - (a.c.age_s + (Date.now() - a.at) / 1000));
    const key = JSON.stringify(list.map(x => [x.c.connection_id, x.c.backend, x.c.bytes_in, x.c.bytes_out, x.from,
      x.c.datagrams_in, x.c.datagrams_out, x.c.streams]));
    const badge = $('#conns-count');
    badge.textContent = String(list.length);
    badge.classList.toggle('live', list.length > 0);
    $('#conns-empty').hidden = list.length > 0;
    if (connsUnavailable) $('#conns-empty').replaceChildren(`This proxy cannot list its connections: ${connsUnavailable}`);
    if (key !== connsKey) {
      connsKey = key;
      body.replaceChildren(...list.map(({ c, from }) => el('tr', { 'data-id': c.connection_id, class: from === 'event' ? 'pending' : '' },
        el('td', { class: 'age' }),
        el('td', {}, el('span', { class: `kind-chip kind-${c.kind}`, text: KIND_TEXT[c.kind] || c.kind })),
        el('td', { class: 'mono', text: c.client }),
        c.kind === 'h2' ? h2Cell(c) : el('td', {}, `${c.listener} → `, c.backend ? el('span', { class: 'backend-dot', style: `background:${colorFor(c.backend)}` }) : null,
          el('b', { text: c.backend || '(choosing)' }), c.pool ? ` (pool ${c.pool})` : '',
          c.sni ? el('span', { class: 'hint', text: ` · SNI ${c.sni}` }) : null,
          c.path ? el('span', { class: 'hint mono', text: ` · ${c.path}` }) : null),
        el('td', { class: 'mono' }, `${fmtBytes(c.bytes_in)} / ${fmtBytes(c.bytes_out)}`,
          c.kind === 'udp' ? el('span', { class: 'dgrams', text: `${c.datagrams_in || 0} / ${c.datagrams_out || 0} datagrams` }) : null),
        el('td', { class: 'mono idle' }))));
    }
    tickAges();
  }

  // An HTTP/2 connection has no backend of its own: its live streams each have one.
  function h2Cell(c) {
    const streams = c.streams || [];
    return el('td', {}, `${c.listener} → `, el('b', { class: 'streams-count', text: `${streamsText(streams.length)} live` }),
      streams.length ? el('ul', { class: 'h2-streams' }, streams.map(s => {
        return el('li', { title: s.request_id ? `request ${s.request_id}` : null }, el('span', { class: 'proto-chip', text: `#${s.stream_id}` }), ' ',
          s.method ? el('span', { class: 'mono', text: `${s.method} ${s.path || ''} ` }) : (s.request_id ? el('code', { text: s.request_id }) : null),
          ' → ', s.backend ? el('span', { class: 'backend-dot', style: `background:${colorFor(s.backend)}` }) : null,
          el('b', { text: s.backend || '(choosing)' }));
      })) : el('span', { class: 'hint', text: ' · idle between requests' }));
  }

  // Ages tick between polls: the proxy's age plus the time since the page got it.
  function tickAges() {
    const now = Date.now();
    for (const row of $('#conn-rows').children) {
      const entry = conns.get(row.dataset.id);
      if (!entry) continue;
      const since = (now - entry.at) / 1000;
      row.children[0].textContent = fmtAge(entry.c.age_s + since);
      const idle = entry.c.idle_s;
      row.children[5].textContent = idle === null || idle === undefined ? '–' : fmtAge(idle + since);
    }
  }
  setInterval(tickAges, 200);

  // ------------------------------------------------------------------ applying messages

  function setProxyUrl(url) {
    if (!url || model.proxyUrl === url) return;
    model.proxyUrl = url;
    $('#proxy-url').textContent = url;
    const cmd = `curl -i ${url}/hello`;
    $('#curl-inline').replaceChildren(' (for example ', el('code', { text: cmd }), ')');
    $('#curl-hint').replaceChildren('Or send requests yourself: ', el('code', { text: cmd }));
  }

  function applyFirstPaint(p) {
    model.proxy = p.proxy || model.proxy;
    if (p.parts) model.parts = p.parts;
    setProxyUrl(p.proxy_url || (p.state && guessProxyUrl(p.state)));
    addHealthEvents(p.events);
    if (p.state) applyState(p.state);
    if (p.diagram) setTopology(p.diagram);
    else if (!p.proxy.reachable) topoBox.replaceChildren(el('p', { class: 'placeholder', text: 'No topology: the proxy does not answer.' }));
    const past = (p.requests || []).concat(p.connection_events || []).sort((a, b) => a.ts - b.ts);
    ingest(past, { history: true });
    applyConnections(p.connections);
    const recent = (p.events || []).slice(-8);
    if (recent.length) logLine(`Recent history (${(p.events || []).length} lifecycle events; newest below):`);
    for (const e of recent) { const [text, level] = describeEvent(e); logLine(text, level, e.ts); }
    if (!p.proxy.reachable) logLine(p.proxy.detail || 'The proxy does not answer.', 'bad');
    renderStatus();
  }

  function guessProxyUrl(state) {
    const l = Object.values(state.listeners || {}).find(x => x.protocol === 'http');
    return l ? `http://${l.bind}` : null;
  }

  let lastProxyReachable = null;
  function applyTick(t) {
    if (t.proxy) {
      if (lastProxyReachable !== null && t.proxy.reachable !== lastProxyReachable) {
        logLine(t.proxy.reachable ? 'The proxy answers again.' : t.proxy.detail, t.proxy.reachable ? 'ok' : 'bad', t.ts);
      }
      lastProxyReachable = t.proxy.reachable;
      model.proxy = t.proxy;
    }
    if (t.stream) model.stream = t.stream;
    if (t.parts) model.parts = t.parts;
    if (t.state) applyState(t.state);
    if (t.diagram) setTopology(t.diagram);
    if (t.opened && t.opened.length) connectionOpened(t.opened);
    if (t.connections) applyConnections(t.connections);
    if (t.decisions && t.decisions.length) { connectionsClosed(t.decisions); ingest(t.decisions); }
    stream.bridgeDropped += t.decisions_dropped || 0;
    if (t.events && t.events.length) {
      addHealthEvents(t.events);
      for (const e of t.events) { const [text, level] = describeEvent(e); logLine(text, level, e.ts); }
      renderTimeline();
    }
    if (t.stats) { pushStats(t.ts, t.stats); countForSummary(t.stats); drawCharts(); }
  }

  function handle(msg) {
    model.lastMessageAt = Date.now();
    if (msg.kind === 'first_paint') applyFirstPaint(msg);
    else if (msg.kind === 'tick') applyTick(msg);
  }

  // ------------------------------------------------------------------ transport

  let ws = null;
  let failures = 0;
  let everOpened = false;
  let pollTimer = null;

  function connect() {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${WS_PATH}`;
    ws = new WebSocket(url);
    ws.addEventListener('open', () => {
      failures = 0; everOpened = true;
      model.feed = 'live';
      model.lastMessageAt = Date.now();
      stopPolling();
      renderStatus();
    });
    ws.addEventListener('message', (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      handle(msg);
    });
    ws.addEventListener('close', () => {
      failures += 1;
      model.feed = 'reconnecting';
      renderStatus();
      if (failures >= 3 && !pollTimer) startPolling();
      setTimeout(connect, Math.min(5000, 500 * 2 ** Math.min(failures, 4)));
    });
  }

  function startPolling() {
    model.feed = everOpened ? 'reconnecting' : 'polling';
    const poll = async () => {
      try {
        const resp = await fetch(`${API}snapshot`, { credentials: 'same-origin' });
        const p = await resp.json();
        model.lastMessageAt = Date.now();
        model.feed = 'polling';
        model.proxy = p.proxy;
        if (p.parts) model.parts = p.parts;
        if (p.state) applyState(p.state);
        if (p.diagram) setTopology(p.diagram);
        applyConnections(p.connections);
        const fresh = (p.requests || []).concat(p.connection_events || []).filter(r => !stream.seen.has(eventId(r)));
        ingest(fresh.sort((a, b) => a.ts - b.ts));
      } catch (err) {
        model.proxy = { reachable: null, detail: `the site does not answer: ${err.message}` };
      }
      renderStatus();
    };
    poll();
    pollTimer = setInterval(poll, 2000);
  }
  function stopPolling() { if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } }

  // ------------------------------------------------------------------ start

  renderStatus();
  connect();
  requestAnimationFrame(playLoop);
  pollTraffic();
  window.lblab = { model, stream };  // for the curious (and for tests)
})();
