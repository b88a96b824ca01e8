// The dashboard's "sandbox parts" panel: which part (the proxy, a toy backend) runs, which
// died and since when, with a Restart button for whoever may change the sandbox.
//
// It polls GET <api-base>parts (explainer/views.py part_status) every 2 s and redraws only
// when the answer changed, so a focused button keeps its focus. Restart posts to the
// existing control endpoint (POST <api-base>control/restart, backend=proxy|bN); the answer's
// message (or error) is read out in a status line. A visitor who may only watch
// (can_change false) sees the same states and no button. A sandbox started by hand has no
// supervised parts: the panel stays hidden.
(function () {
  'use strict';
  const main = document.querySelector('[data-api-base]');
  if (!main) return;
  const API = main.dataset.apiBase;
  const POLL_MS = 2000;
  let lastKey = null;
  let busy = false;

  function make(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  const panel = make('section', { id: 'parts-panel', class: 'card parts-panel',
                                  style: 'margin: 0 24px 12px',
                                  'aria-labelledby': 'parts-h', hidden: '' });
  const list = make('ul', { id: 'parts-list', class: 'parts-list' });
  const said = make('p', { id: 'parts-result', class: 'result', role: 'status',
                           'aria-live': 'polite' });
  panel.append(make('h2', { id: 'parts-h', text: 'Sandbox parts' }), list, said);
  const anchor = document.getElementById('banners');
  if (anchor) anchor.after(panel); else main.prepend(panel);

  function csrfToken() {
    const input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    if (input) return input.value;
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : '';
  }

  function label(name) { return name === 'proxy' ? 'the proxy' : `backend ${name}`; }

  function row(name, info, canChange) {
    const item = make('li', { class: 'part', 'data-part': name,
                              'data-alive': info.alive ? 'yes' : 'no' });
    item.append(make('span', { class: `pill ${info.alive ? 'pill-ok' : 'pill-bad'}`,
                               text: `${name}: ${info.alive ? 'running' : 'dead'}` }));
    if (!info.alive) {
      let text = ` ${label(name)} died: ${info.detail}`;
      if (info.since) text += ` (noticed dead at ${new Date(info.since * 1000).toLocaleTimeString()})`;
      item.append(make('span', { class: 'part-detail', text }));
      if (canChange) {
        const button = make('button', { type: 'button', class: 'part-restart',
                                        'data-part': name, text: 'Restart',
                                        'aria-label': `Restart ${label(name)}` });
        button.addEventListener('click', () => restart(name, button));
        item.append(' ', button);
      } else {
        item.append(make('span', { class: 'hint', text: ' Only the sandbox owner can restart it.' }));
      }
    }
    return item;
  }

  function draw(data) {
    const key = JSON.stringify([data.parts, data.can_change]);
    if (key === lastKey) return;
    lastKey = key;
    if (!data.managed || !data.parts) { panel.hidden = true; return; }
    panel.hidden = false;
    list.replaceChildren(...Object.entries(data.parts)
      .map(([name, info]) => row(name, info, data.can_change)));
  }

  async function refresh() {
    try {
      const resp = await fetch(`${API}parts`, { headers: { Accept: 'application/json' } });
      if (resp.ok) draw(await resp.json());
    } catch (err) { /* the site is restarting: try again at the next tick */ }
  }

  async function restart(name, button) {
    busy = true;
    button.disabled = true;
    said.textContent = `Restarting ${label(name)}…`;
    const body = new URLSearchParams({ backend: name, csrfmiddlewaretoken: csrfToken() });
    try {
      const resp = await fetch(`${API}control/restart`, {
        method: 'POST', body,
        headers: { 'X-CSRFToken': csrfToken(), Accept: 'application/json' } });
      const data = await resp.json().catch(() => ({}));
      said.textContent = resp.ok ? data.message
        : `Could not restart ${label(name)}: ${data.error || resp.status}`;
    } catch (err) {
      said.textContent = `Could not restart ${label(name)}: ${err}`;
    } finally {
      busy = false;
      lastKey = null;
      await refresh();
    }
  }

  refresh();
  setInterval(() => { if (!busy) refresh(); }, POLL_MS);
})();
