/* Shared helpers of the workshop pages: DOM building, CSRF-protected POSTs, a WebSocket
   that reconnects, and durations people read at a glance. */
(function () {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // el('td', {class: 'x', text: 'hi'}, child...): text is set as text, never as HTML.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'text') node.textContent = value;
      else if (key === 'class') node.className = value;
      else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function csrfToken() {
    const input = $('input[name="csrfmiddlewaretoken"]');
    if (input) return input.value;
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : '';
  }

  // POST form-encoded data with the CSRF token; resolves to {ok, status, data}.
  async function post(url, data) {
    const body = data instanceof FormData ? new URLSearchParams(data) : new URLSearchParams(data || {});
    body.delete('csrfmiddlewaretoken');
    let resp;
    try {
      resp = await fetch(url, {
        method: 'POST', body, credentials: 'same-origin',
        headers: { 'X-CSRFToken': csrfToken(), 'Accept': 'application/json' },
      });
    } catch (err) {
      return { ok: false, status: 0, data: { error: `the site does not answer (${err.message}); check your connection and try again` } };
    }
    let payload;
    try { payload = await resp.json(); } catch (_) {
      payload = { error: `the site answered ${resp.status} ${resp.statusText}` };
    }
    return { ok: resp.ok && payload.ok !== false, status: resp.status, data: payload };
  }

  function showResult(box, res) {
    if (!box) return;
    box.className = 'result ' + (res.ok ? 'ok' : 'err');
    box.textContent = res.ok ? (res.data.message || 'Done.') : (res.data.error || 'That did not work.');
  }

  // "4 s", "3 min 05 s", "1 h 12 min"
  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return `${seconds} s`;
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return `${m} min ${String(s).padStart(2, '0')} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
  }

  function clock(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  }

  // A WebSocket to `path` that reconnects with backoff; onStatus(state) gets
  // 'live' | 'reconnecting' | 'closed:<code>'. Closes with 44xx are final (not allowed).
  function socket(path, { onMessage, onStatus, pingEvery = 20000 }) {
    let ws = null, tries = 0, pinger = null, stopped = false;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
    function open() {
      ws = new WebSocket(url);
      ws.onopen = () => {
        tries = 0; onStatus && onStatus('live');
        clearInterval(pinger);
        pinger = setInterval(() => { if (ws.readyState === 1) ws.send(JSON.stringify({ kind: 'ping' })); }, pingEvery);
      };
      ws.onmessage = (ev) => { let msg; try { msg = JSON.parse(ev.data); } catch (_) { return; } onMessage(msg); };
      ws.onclose = (ev) => {
        clearInterval(pinger);
        if (stopped) return;
        if (ev.code >= 4400 && ev.code < 4500) { onStatus && onStatus(`closed:${ev.code}`); return; }
        onStatus && onStatus('reconnecting');
        tries += 1;
        setTimeout(open, Math.min(10000, 500 * 2 ** Math.min(tries, 5)));
      };
    }
    open();
    return { close() { stopped = true; if (ws) ws.close(); }, get ws() { return ws; } };
  }

  function setPill(node, text, kind) {
    if (!node) return;
    node.textContent = text;
    node.className = `pill pill-${kind}`;
  }

  window.LBW = { $, $$, el, post, showResult, duration, clock, socket, setPill, csrfToken };
})();
