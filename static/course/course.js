/* LBLab course pages.
 *
 * Every page works without this file (forms post, pages render server-side); this adds:
 * - Mermaid rendering of every <pre class="mermaid"> (vendored Mermaid, securityLevel
 *   'strict'; the text was escaped by the server),
 * - check questions answered in place (POST with Accept: application/json),
 * - the "see it live" panel: apply the lesson's preset to the learner's sandbox, send
 *   sample requests, and poll the proxy's recent decisions and topology,
 * - a "running…" note while a prediction runs in the sandbox.
 * Text from the server is inserted with textContent, never as HTML (Mermaid's own SVG
 * output aside, which it sanitises in strict mode).
 */
(() => {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function csrfToken(form) {
    const input = (form && form.querySelector('input[name="csrfmiddlewaretoken"]'))
      || $('input[name="csrfmiddlewaretoken"]');
    if (input) return input.value;
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : '';
  }

  async function postJSON(url, form, body) {
    const resp = await fetch(url, {
      method: 'POST',
      headers: { 'Accept': 'application/json', 'X-CSRFToken': csrfToken(form) },
      body: body || (form ? new FormData(form) : null),
      credentials: 'same-origin',
    });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = { ok: false, error: `HTTP ${resp.status}` }; }
    if (!resp.ok && data && data.ok !== false) data.ok = false;
    return data;
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
        fontFamily: FONT, fontSize: '14px',
        primaryColor: '#eef2ff', primaryBorderColor: '#6366f1', primaryTextColor: '#1f2937',
        lineColor: '#64748b', secondaryColor: '#f0f9ff', tertiaryColor: '#ffffff',
        noteBkgColor: '#fefce8', noteBorderColor: '#eab308', noteTextColor: '#422006',
        actorBkg: '#eef2ff', actorBorder: '#6366f1', actorTextColor: '#1e1b4b',
        signalColor: '#334155', signalTextColor: '#1f2937',
      },
      flowchart: { curve: 'basis', nodeSpacing: 30, rankSpacing: 50, padding: 10, useMaxWidth: true },
      sequence: { mirrorActors: false, useMaxWidth: true, actorMargin: 40, messageMargin: 28,
                  noteMargin: 8, wrap: false, actorFontFamily: FONT, messageFontFamily: FONT,
                  noteFontFamily: FONT },
      state: { useMaxWidth: true },
    });
  }

  let chain = Promise.resolve();
  let seq = 0;
  function renderInto(container, text) {
    chain = chain.then(async () => {
      if (!mermaidReady) {
        container.replaceChildren(el('pre', { class: 'diagram-error', text }));
        return;
      }
      const id = `cmmd-${++seq}`;
      try {
        const { svg } = await window.mermaid.render(id, text);
        container.innerHTML = svg;  // sanitised by Mermaid (strict)
        const svgEl = container.querySelector('svg');
        if (svgEl) svgEl.setAttribute('role', 'img');
        container.classList.add('rendered');
      } catch (err) {
        container.replaceChildren(el('p', { class: 'diagram-error',
          text: `Could not draw this diagram: ${err && err.message ? err.message : err}` }));
        const stray = document.getElementById(`d${id}`);
        if (stray) stray.remove();
      }
    });
    return chain;
  }

  function renderAll(root = document) {
    for (const pre of $$('pre.mermaid', root)) {
      const text = pre.textContent;
      const box = el('div', { class: 'mermaid-out' });
      pre.replaceWith(box);
      renderInto(box, text);
    }
  }
  renderAll();

  // ------------------------------------------------------------------ check questions

  function showFeedback(form, data) {
    const box = $('.feedback', form);
    form.classList.add('answered');
    form.classList.toggle('is-right', !!data.correct);
    form.classList.toggle('is-wrong', !data.correct);
    const parts = [el('p', { class: 'verdict', text: data.correct ? 'Right.' : 'Not quite.' })];
    // The *_html fields come from the server's Markdown subset renderer, which escapes all
    // text and writes only its own tags (explainer/course/markdown.py): safe to insert.
    for (const note of data.feedback_html || []) {
      const p = el('p', { class: 'choice-note' });
      p.innerHTML = note;
      parts.push(p);
    }
    const explanation = el('div', { class: 'explanation' });
    explanation.innerHTML = data.explanation_html;
    parts.push(explanation);
    const answer = el('p', { class: 'answer-line' });
    answer.innerHTML = `Answer: ${data.answer_html}`;
    parts.push(answer);
    box.replaceChildren(...parts);
    const attempts = $('.attempts', form) || el('span', { class: 'attempts hint' });
    attempts.textContent = `${data.attempts} attempt${data.attempts === 1 ? '' : 's'}`;
    $('.check-actions', form).append(attempts);
    const solved = $('#checks-solved');
    if (solved) solved.textContent = data.checks_correct;
    const toc = $('#toc-solved');
    if (toc) toc.textContent = `${data.checks_correct}/${data.checks_total}`;
    if (data.lesson_done && !$('#lesson-done')) {
      $('#checks .card-head').append(el('p', { id: 'lesson-done', class: 'done-banner',
        text: 'Every check question right: this lesson is done.' }));
    }
  }

  for (const form of $$('form.check')) {
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const button = $('button[type="submit"]', form);
      button.disabled = true;
      try {
        const data = await postJSON(form.action, form);
        if (data.ok) showFeedback(form, data);
        else $('.feedback', form).replaceChildren(el('p', { class: 'verdict error', text: data.error || 'Could not check this answer.' }));
      } catch (err) {
        $('.feedback', form).replaceChildren(el('p', { class: 'verdict error', text: `The server did not answer: ${err}` }));
      } finally {
        button.disabled = false;
      }
    });
  }

  // ------------------------------------------------------------------ see it live

  const live = $('#live');
  if (live) {
    const status = $('#live-status');
    const setupForm = $('#live-setup-form');
    const sendButton = $('#live-send');
    const topo = $('#live-topology');
    const tbody = $('#live-decisions tbody');
    let lastDiagram = '';
    let polling = null;

    function say(text, kind) {
      status.textContent = text;
      status.className = `live-status ${kind || ''}`;
    }

    function setTopology(text) {
      if (!text || text === lastDiagram) return;
      lastDiagram = text;
      const hint = $('#live-topo-hint');
      if (hint) hint.textContent = '(live: your proxy’s GET /state)';
      renderInto(topo, text);
    }

    function fmtStatus(row) {
      const cls = row.status ? `s${String(row.status)[0]}xx` : 'snone';
      return el('span', { class: `status ${cls}${row.proxy_error ? ' sproxy' : ''}`,
        title: row.proxy_error ? 'made by the proxy' : 'from the backend', text: row.status || '—' });
    }

    function showRows(rows) {
      if (!rows.length) {
        tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: '6', text: 'No requests yet: send some.' })));
        return;
      }
      tbody.replaceChildren(...rows.map((r) => el('tr', {},
        el('td', { class: 'mono', text: r.client || '' }),
        el('td', { class: 'mono', text: `${r.method || ''} ${r.path || ''}` }),
        el('td', {}, el('strong', { text: r.backend || '—' })),
        el('td', {}, fmtStatus(r)),
        el('td', { class: 'mono', text: r.latency_ms }),
        el('td', { class: 'why', text: r.why || '' }))));
    }

    async function poll() {
      try {
        const resp = await fetch(live.dataset.recentUrl, { headers: { 'Accept': 'application/json' }, credentials: 'same-origin' });
        const data = await resp.json();
        if (data.running) {
          showRows(data.rows || []);
          setTopology(data.diagram);
          sendButton.disabled = false;
        } else if (data.detail) {
          say(data.detail, 'err');
        }
      } catch (err) { /* the next poll will tell */ }
    }

    function startPolling() {
      if (polling) return;
      poll();
      polling = setInterval(() => { if (!document.hidden) poll(); }, 2000);
    }

    setupForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const button = $('#live-setup');
      button.disabled = true;
      say('Setting up your sandbox: starting it if needed, clearing faults, applying the preset…', 'wait');
      try {
        const data = await postJSON(live.dataset.setupUrl, setupForm);
        if (data.ok) {
          say(data.message, 'ok');
          setTopology(data.diagram);
          $('#live-dashboard').href = data.dashboard_url;
          sendButton.disabled = false;
          startPolling();
        } else {
          const detail = (data.errors || []).filter((e) => e.path).map((e) => `${e.path}: ${e.message}`).join('; ');
          say(`${data.error}${detail ? ` (${detail})` : ''}`, 'err');
        }
      } catch (err) {
        say(`The server did not answer: ${err}`, 'err');
      } finally {
        button.disabled = false;
      }
    });

    sendButton.addEventListener('click', async () => {
      sendButton.disabled = true;
      say('Sending requests through your proxy…', 'wait');
      try {
        const data = await postJSON(live.dataset.sendUrl, setupForm);
        say(data.ok ? data.message : data.error, data.ok ? 'ok' : 'err');
        await poll();
      } finally {
        sendButton.disabled = false;
      }
    });

    if (live.dataset.running === '1') startPolling();
  }

  // ------------------------------------------------------------------ predict

  const predictForm = $('#predict-form');
  if (predictForm) {
    predictForm.addEventListener('submit', () => {
      const button = $('#predict-submit');
      // Disable after the browser has collected the form (a disabled button is not sent).
      setTimeout(() => { button.disabled = true; }, 0);
      const hint = $('#predict-running');
      if (hint) hint.hidden = false;
    });
  }
})();
