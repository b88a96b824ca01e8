/* The presenter page: the instructor's dashboard in a frame. While presenting, what the
   instructor does in it (scroll, switch a tab, click a card) is posted (CSRF-protected,
   throttled) and the server relays it to every learner's page. */
(function () {
  'use strict';
  const { $, post } = window.LBW;

  const bar = $('#present');
  const CONTROL = bar.dataset.controlBase;
  const frame = $('#screen');
  let presenting = bar.dataset.presenting === '1';
  let view = { tab: '', scroll: 0, spot: '' };
  let timer = null, lastSent = 0, sent = 0;

  function status(text) { $('#sync-status').textContent = text; }

  function send() {
    timer = null;
    if (!presenting) return;
    lastSent = Date.now();
    post(CONTROL + 'present-view', view).then(res => {
      if (res.ok) { sent += 1; status(`view synced (${sent})`); }
      else status(res.data.error || 'could not sync the view');
    });
  }
  function queue() {
    if (!presenting || timer) return;
    // At most ~4 updates a second; the last position always goes out.
    timer = setTimeout(send, Math.max(0, 250 - (Date.now() - lastSent)));
  }

  function readTab(doc) {
    const t = doc.querySelector('[role="tab"][aria-selected="true"]');
    return t ? t.id : '';
  }

  function spotlight(doc, heading) {
    doc.querySelectorAll('.lbw-spot').forEach(n => n.classList.remove('lbw-spot'));
    const card = heading && doc.getElementById(heading);
    if (card && card.closest('section')) card.closest('section').classList.add('lbw-spot');
  }

  frame.addEventListener('load', () => {
    const win = frame.contentWindow, doc = frame.contentDocument;
    if (!doc) return;
    // The same spotlight learners see, so the instructor knows what they pointed at.
    const style = doc.createElement('style');
    style.textContent = '.lbw-spot{outline:4px solid #f59e0b;outline-offset:3px;box-shadow:0 0 0 10px rgba(245,158,11,.18)!important}';
    doc.head.append(style);
    view.tab = readTab(doc);
    win.addEventListener('scroll', () => {
      const max = doc.documentElement.scrollHeight - win.innerHeight;
      view.scroll = max > 0 ? Math.min(1, win.scrollY / max) : 0;
      queue();
    }, { passive: true });
    doc.addEventListener('click', (ev) => {
      const tab = ev.target.closest('[role="tab"]');
      // The dashboard switches the tab in its own click handler, which runs first.
      setTimeout(() => { view.tab = readTab(doc); queue(); }, 0);
      const card = ev.target.closest('section.card');
      const heading = card && card.getAttribute('aria-labelledby');
      if (heading && !tab) { view.spot = heading; if (presenting) spotlight(doc, heading); queue(); }
    });
    doc.addEventListener('keyup', () => { const t = readTab(doc); if (t !== view.tab) { view.tab = t; queue(); } });
    queue();
  });

  function show() {
    $('#rec').hidden = !presenting;
    $('#present-state').textContent = presenting ? 'Presenting to your learners' : 'Not presenting';
    const b = $('#toggle');
    b.textContent = presenting ? '■ Stop presenting' : '▶ Start presenting';
    b.className = presenting ? '' : 'primary';
  }

  $('#toggle').addEventListener('click', async () => {
    const res = await post(CONTROL + (presenting ? 'present-stop' : 'present-start'), {});
    if (!res.ok) { status(res.data.error || 'that did not work'); return; }
    presenting = res.data.present.on;
    show();
    status(res.data.message);
    if (presenting) queue();
  });
  show();
})();
