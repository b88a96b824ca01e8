/* The instructor's cockpit: one snapshot from the server (first in the page, then over the
   WebSocket on every change, every 5 s anyway), drawn as tiles, the learners table, the
   activity feed and the last fault's per-learner results. "Stuck for" ticks here between
   snapshots. Controls are CSRF-protected POSTs; their answers show under the toolbar. */
(function () {
  'use strict';
  const { $, $$, el, post, showResult, duration, clock, socket, setPill } = window.LBW;

  const root = $('#cockpit');
  const CONTROL = root.dataset.controlBase;
  let snap = JSON.parse($('#first-snapshot').textContent);
  let receivedAt = Date.now();
  let seenActivity = new Set();
  let firstDraw = true;
  const lastRowKey = new Map();

  // ------------------------------------------------------------------ drawing

  function stuckClass(s) { return s >= 900 ? 's-high' : s >= 300 ? 's-mid' : 's-low'; }
  function stuckNow(row) { return row.stuck_s + Math.floor((Date.now() - receivedAt) / 1000); }

  function where(item) {
    if (!item) return el('span', { class: 'none', text: '—' });
    const mark = item.passed === true ? '✓ ' : item.passed === false ? '✗ ' : '';
    return el('div', {},
      el('div', { class: 'where', text: mark + item.title }),
      item.step ? el('div', { class: 'where-step', text: item.step }) : null);
  }

  function count(n, cls) { return el('span', { class: n ? cls : 'zero', text: String(n) }); }

  function rowFor(r, top) {
    const s = stuckNow(r);
    const pct = Math.min(100, (s / 1800) * 100);
    const tr = el('tr', { 'data-learner': r.id, class: [top ? 'row-top' : '', r.hand_raised_at ? 'row-hand' : ''].join(' ').trim() || null },
      el('td', { class: 'name' },
        el('span', { class: 'who-name' },
          el('span', { class: 'dot' + (r.online ? ' on' : ''), title: r.online ? 'page open' : 'page closed' }),
          r.name),
        r.hand_raised_at ? el('span', { class: 'hand-badge', title: `since ${clock(r.hand_raised_at)}`, text: '⚑ hand up' }) : null),
      el('td', { class: 'lesson' }, where(r.lesson)),
      el('td', { class: 'lab' }, where(r.lab)),
      el('td', { class: 'num' }, count(r.passes, 'passes')),
      el('td', { class: 'num' }, count(r.failures, 'fails')),
      el('td', { class: `stuck ${stuckClass(s)}`, 'data-stuck': r.id },
        el('span', { class: 't', text: duration(s) }),
        el('div', { class: 'bar' }, el('span', { style: `width:${pct}%` }))),
      el('td', {}, el('span', { class: `chip chip-${r.sandbox.state}`, title: r.sandbox.message || r.sandbox.id || '', text: r.sandbox.label })),
      el('td', {}, r.last_fault
        ? el('span', { class: r.last_fault.ok ? 'fault-ok' : 'fault-bad', text: (r.last_fault.ok ? '✓ ' : '✗ ') + r.last_fault.message })
        : el('span', { class: 'none', text: '—' })),
      el('td', {}, el('a', { href: r.detail_url, class: 'button small', text: 'Open' })));
    return tr;
  }

  function drawLearners() {
    const body = $('#learner-rows');
    if (!snap.learners.length) {
      body.replaceChildren(el('tr', { class: 'empty-row' }, el('td', { colspan: 9, text: `Waiting for learners… they join at the link above with the code ${snap.workshop.code}.` })));
      return;
    }
    const topId = snap.stuck_longest && snap.learners.length > 1 ? snap.stuck_longest.id : null;
    const rows = snap.learners.map(r => {
      const tr = rowFor(r, r.id === topId);
      const key = JSON.stringify([r.lesson, r.lab, r.passes, r.failures, r.hand_raised_at, r.sandbox.state, r.last_fault]);
      if (!firstDraw && lastRowKey.get(r.id) !== key) tr.classList.add('fresh');
      lastRowKey.set(r.id, key);
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function drawCallout() {
    const box = $('#stuck-callout');
    const top = snap.stuck_longest;
    if (!snap.learners.length || !top) {
      box.className = 'stuck-callout calm';
      box.replaceChildren(el('span', { class: 'icon', 'aria-hidden': 'true', text: '✓' }),
        el('span', {}, 'Nobody has joined yet. Share the code ', el('strong', { text: snap.workshop.code }), '.'));
      return;
    }
    const row = snap.learners.find(r => r.id === top.id) || top;
    const s = stuckNow(row);
    const at = row.lab && (!row.lesson || row.lab.updated_at >= row.lesson.updated_at) ? row.lab : row.lesson;
    const place = at ? ` on ${at.title}${at.step ? ` (${at.step})` : ''}` : ' since joining';
    const hands = snap.learners.filter(r => r.hand_raised_at);
    const calm = s < 300 && !hands.length;
    box.className = 'stuck-callout' + (calm ? ' calm' : '');
    box.replaceChildren(
      el('span', { class: 'icon', 'aria-hidden': 'true', text: calm ? '✓' : '!' }),
      el('span', {}, 'Stuck longest: ', el('strong', { id: 'stuck-name', text: row.name }),
        ` — ${duration(s)} without progress${place}`,
        row.failures ? `, ${row.failures} failed attempt${row.failures > 1 ? 's' : ''}` : '', '.',
        hands.length ? el('span', { class: 'hands-note' }, ' ⚑ Asking for help: ',
          el('strong', { text: hands.map(r => r.name).join(', ') }), '.') : ''));
  }

  // Each tile's word, singular and plural: "1 learner", "2 learners", "0 learners".
  const TILE_WORDS = {
    learners: ['learner', 'learners'], online: ['page open now', 'pages open now'],
    hands: ['hand raised', 'hands raised'], passes: ['pass', 'passes'],
    failures: ['failure', 'failures'], sandboxes: ['sandbox running', 'sandboxes running'],
  };
  function drawTiles() {
    const c = snap.counts;
    for (const [k, [one, many]] of Object.entries(TILE_WORDS)) {
      const n = $(`#n-${k}`);
      n.textContent = c[k];
      n.closest('.tile').querySelector('.k').textContent = c[k] === 1 ? one : many;
      n.closest('.tile').classList.toggle('is-zero', !c[k]);
    }
  }

  function drawActivity() {
    const list = $('#activity');
    const items = snap.activity.map(a => {
      const cls = a.ok === true ? 'k-ok' : a.ok === false ? 'k-bad' : a.kind === 'hand' ? 'k-hand' : '';
      const li = el('li', { 'data-activity': a.id, class: !firstDraw && !seenActivity.has(a.id) ? 'fresh' : null },
        el('span', { class: 't', text: clock(a.at) }), el('span', { class: cls, text: a.text }));
      return li;
    });
    seenActivity = new Set(snap.activity.map(a => a.id));
    list.replaceChildren(...items);
    if (!items.length) list.replaceChildren(el('li', {}, el('span'), el('span', { class: 'placeholder', text: 'Nothing yet.' })));
  }

  function drawFaults() {
    const box = $('#fault-results');
    const inj = snap.last_injection;
    if (!inj) { box.replaceChildren(el('p', { class: 'placeholder', text: 'No fault injected yet.' })); return; }
    box.replaceChildren(
      el('p', { class: 'hint', text: `${inj.label} on ${inj.backend} at ${clock(inj.at)}: done in ${inj.ok} of ${inj.total} sandbox${inj.total === 1 ? '' : 'es'}.` }),
      el('ul', { class: 'results-list', id: 'fault-result-list' }, inj.results.map(r =>
        el('li', { class: r.ok ? 'ok' : 'bad', 'data-learner': r.participant },
          el('span', { class: 'mark', text: r.ok ? '✓' : '✗' }),
          el('span', {}, el('strong', { text: r.name }), ' ', el('span', { class: 'hint', text: r.message }))))));
  }

  function drawState() {
    const w = snap.workshop;
    $('#present-pill').hidden = !w.presenting;
    $('#ended-pill').hidden = w.open;
    $('#present-start').disabled = !w.open;
    $('#present-stop').disabled = !w.presenting;
    $('#present-sandbox').textContent = w.present_sandbox;
    $('#inject').disabled = !w.open;
  }

  function draw() {
    drawTiles(); drawCallout(); drawLearners(); drawActivity(); drawFaults(); drawState();
    firstDraw = false;
  }

  function accept(next) {
    if (!next || next.kind !== 'cockpit') return;
    snap = next; receivedAt = Date.now();
    draw();
  }

  // "Stuck for" ticks every second without a round trip.
  setInterval(() => {
    for (const td of $$('td[data-stuck]')) {
      const r = snap.learners.find(x => String(x.id) === td.dataset.stuck);
      if (!r) continue;
      const s = stuckNow(r);
      td.className = `stuck ${stuckClass(s)}`;
      $('.t', td).textContent = duration(s);
      $('.bar span', td).style.width = `${Math.min(100, (s / 1800) * 100)}%`;
    }
    drawCallout();
  }, 1000);

  // ------------------------------------------------------------------ live feed

  let polling = null;
  function poll() {
    fetch(root.dataset.jsonUrl, { credentials: 'same-origin' })
      .then(r => r.ok ? r.json() : null).then(accept).catch(() => {});
  }
  socket(root.dataset.wsPath, {
    onMessage: accept,
    onStatus: (state) => {
      if (state === 'live') {
        setPill($('#feed-status'), 'live', 'ok');
        clearInterval(polling); polling = null;
      } else {
        setPill($('#feed-status'), state.startsWith('closed') ? 'not allowed: log in again' : 'reconnecting… (polling)', state.startsWith('closed') ? 'bad' : 'warn');
        if (!polling) polling = setInterval(poll, 5000);
      }
    },
  });

  // ------------------------------------------------------------------ controls

  for (const form of $$('form.control')) {
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const button = $('button[type=submit]', form);
      const label = button.textContent;
      button.disabled = true;
      if (form.dataset.action === 'inject-fault') button.textContent = 'Injecting…';
      const data = new FormData(form);
      // Only send the knobs of the chosen fault.
      $$('label[data-for]', form).forEach(l => { if (l.hidden) data.delete($('input', l).name); });
      const res = await post(CONTROL + form.dataset.action, data);
      button.textContent = label;
      button.disabled = false;
      showResult($('#control-result'), res);
      if (res.ok && form.dataset.action === 'present-start') {
        window.open(root.dataset.presentUrl, 'lblab-presenter');
      }
      poll();
    });
  }

  const faultSelect = $('#fault-select');
  function syncFault() {
    const f = faultSelect.value;
    $$('#fault-form label[data-for]').forEach(l => { l.hidden = !l.dataset.for.split(' ').includes(f); });
    const opt = faultSelect.selectedOptions[0];
    $('#fault-help').textContent = opt ? `${opt.textContent}: ${opt.dataset.help}.` : '';
  }
  faultSelect.addEventListener('change', syncFault);
  syncFault();

  $('#copy-join').addEventListener('click', async () => {
    const text = $('#join-url').textContent.trim();
    try { await navigator.clipboard.writeText(text); $('#copy-join').textContent = 'Copied ✓'; }
    catch (_) { window.prompt('Copy the join link:', text); }
    setTimeout(() => { $('#copy-join').textContent = 'Copy link'; }, 1500);
  });

  draw();
})();
