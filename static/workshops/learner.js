/* A learner's workshop page: their sandbox, their progress, a raised hand, notices, and
   presenter mode: while the instructor presents, their dashboard covers this page in a
   watch-only frame that follows their scroll position, tab and highlighted card. The
   learner can leave (and follow again); a new presentation brings the frame back. */
(function () {
  'use strict';
  const { $, el, post, showResult, socket, setPill, clock } = window.LBW;

  const root = $('#learner');
  let me = JSON.parse($('#first-me').textContent);
  let present = me.present;
  let leftSession = null;  // started_at of the presentation the learner left
  const frame = $('#follow-frame');
  let frameReady = false;
  let pendingView = null;

  // ------------------------------------------------------------------ own work

  // A result line ("Your sandbox is running.") describes the state it was written for: when
  // the sandbox changes state (the instructor ended the workshop, it was reaped), it goes.
  let drawnState = null;
  function drawSandbox() {
    const sb = me.sandbox;
    if (drawnState !== null && drawnState !== sb.state) $('#sandbox-result').replaceChildren();
    drawnState = sb.state;
    const state = $('#sandbox-state');
    const chip = el('span', { class: `chip chip-${sb.state}`, id: 'sandbox-chip', text: sb.label });
    state.replaceChildren(chip, sb.id ? el('span', { class: 'hint' }, ' ', el('code', { text: sb.id })) : '');
    if (sb.proxy_url) {
      state.append(el('p', { class: 'hint', id: 'sandbox-proxy' }, 'Send requests to your proxy: ',
        el('code', { text: `curl -i ${sb.proxy_url}/hello` })));
    }
    if (sb.message && sb.state !== 'running') state.append(el('p', { class: sb.state === 'refused' || sb.state === 'failed' ? 'msg-err' : 'hint', text: sb.message }));
    const open = $('#sandbox-open');
    open.hidden = !sb.dashboard_url;
    if (sb.dashboard_url) open.href = sb.dashboard_url;
    $('#sandbox-start').hidden = sb.state === 'running';
    $('#sandbox-start').disabled = !me.workshop.open;
  }

  // Where each progress item lives, so its title is a link back to it.
  function itemUrl(i) {
    const key = encodeURIComponent(String(i.key || '').split('/')[0]);
    return { lesson: `/course/lessons/${key}/`, check: `/course/lessons/${key}/`, drill: `/course/drills/${key}/`,
             predict: `/course/predict/${key}/`, lab: `/labs/${key}/` }[i.kind] || null;
  }

  function drawProgress() {
    const list = $('#progress');
    if (!me.progress.length) {
      const links = JSON.parse(root.dataset.links || '[]');
      list.replaceChildren(el('li', {}, el('span'), el('span', { class: 'placeholder' }, 'Nothing yet: ',
        links.length ? links.map((l, i) => [i ? ' or ' : '', el('a', { href: l.url, text: l.label })]) : 'open a lesson or a lab', '.'), el('span')));
      return;
    }
    list.replaceChildren(...me.progress.map(i => el('li', { class: i.passed === true ? 'p-pass' : i.passed === false ? 'p-fail' : 'p-open' },
      el('span', { class: 'mark', text: i.passed === true ? '✓' : i.passed === false ? '✗' : '●' }),
      el('span', {}, el('span', { class: 'kind', text: i.kind }),
        itemUrl(i) ? el('a', { href: itemUrl(i), text: i.title }) : i.title,
        i.step ? el('span', { class: 'hint', text: ` · ${i.step}` }) : ''),
      el('span', { class: 'hint', text: `${i.passes}✓ ${i.failures}✗` }))));
  }

  function drawHand() {
    const raised = !!me.me.hand_raised_at;
    const b = $('#hand');
    b.setAttribute('aria-pressed', raised ? 'true' : 'false');
    b.textContent = raised ? '⚑ Lower my hand' : '⚑ Raise my hand';
  }

  function drawNotices() {
    const list = $('#notices');
    const items = me.faults.map(f => el('li', { class: f.ok ? 'warn' : '' }, el('strong', { text: clock(f.at) + ' ' }), f.ok ? `Fault injected: ${f.message}` : `A fault could not reach your sandbox: ${f.message}`));
    list.replaceChildren(...(items.length ? items : [el('li', { class: 'placeholder-note', text: 'Nothing yet.' })]));
  }

  function drawAll() {
    drawSandbox(); drawProgress(); drawHand(); drawNotices();
    $('#ended').hidden = me.workshop.open;
  }

  // ------------------------------------------------------------------ presenter mode

  function applyView(view) {
    if (!view) return;
    if (!frameReady) { pendingView = view; return; }
    const doc = frame.contentDocument, win = frame.contentWindow;
    if (!doc || !win) return;
    if (view.tab) {
      const tab = doc.getElementById(view.tab);
      if (tab && tab.getAttribute('aria-selected') !== 'true') tab.click();
    }
    if (typeof view.scroll === 'number') {
      const max = doc.documentElement.scrollHeight - win.innerHeight;
      win.scrollTo({ top: Math.round(view.scroll * Math.max(0, max)), behavior: 'smooth' });
    }
    doc.querySelectorAll('.lbw-spot').forEach(n => { n.classList.remove('lbw-spot'); });
    if (view.spot) {
      const head = doc.getElementById(view.spot);
      const card = head && head.closest('section');
      if (card) card.classList.add('lbw-spot');
    }
    root.dataset.followSeq = String(view.seq || 0);
  }

  frame.addEventListener('load', () => {
    frameReady = true;
    const doc = frame.contentDocument;
    if (doc && !doc.getElementById('lbw-style')) {
      // The spotlight the instructor's click puts on a card.
      doc.head.append(el('style', { id: 'lbw-style', text: '.lbw-spot{outline:4px solid #f59e0b;outline-offset:3px;box-shadow:0 0 0 10px rgba(245,158,11,.18)!important;transition:outline-color .3s}' }));
    }
    applyView(pendingView || present.view);
    pendingView = null;
  });

  function showFollow(on) {
    $('#follow').hidden = !on;
    document.body.style.overflow = on ? 'hidden' : '';
    if (on && (!frame.getAttribute('src'))) {
      frameReady = false;
      frame.setAttribute('src', present.screen_url);
    }
  }

  function onPresent(next) {
    const was = present;
    present = next;
    if (!present.on) {
      showFollow(false);
      $('#rejoin').hidden = true;
      if (was && was.on) { frame.removeAttribute('src'); frameReady = false; }
      return;
    }
    if (was && was.sandbox !== present.sandbox) { frame.removeAttribute('src'); frameReady = false; }
    const left = leftSession && leftSession === present.started_at;
    $('#rejoin').hidden = !left;
    showFollow(!left);
    if (!left) applyView(present.view);
  }

  $('#leave').addEventListener('click', () => {
    leftSession = present.started_at;
    showFollow(false);
    $('#rejoin').hidden = false;
  });
  $('#rejoin').addEventListener('click', () => {
    leftSession = null;
    $('#rejoin').hidden = true;
    showFollow(true);
    applyView(present.view);
  });

  // ------------------------------------------------------------------ actions

  $('#sandbox-start').addEventListener('click', async () => {
    const b = $('#sandbox-start');
    b.disabled = true; b.textContent = 'Starting… (a few seconds)';
    const res = await post(root.dataset.sandboxUrl, {});
    b.textContent = 'Start my sandbox'; b.disabled = false;
    showResult($('#sandbox-result'), res);
    refresh();
  });

  $('#hand').addEventListener('click', async () => {
    const raise = !me.me.hand_raised_at;
    const res = await post(root.dataset.handUrl, raise ? { raised: 'on' } : {});
    showResult($('#hand-result'), res);
    if (res.ok) { me.me.hand_raised_at = res.data.raised ? new Date().toISOString() : null; drawHand(); }
  });

  function refresh() {
    fetch(root.dataset.jsonUrl, { credentials: 'same-origin' })
      .then(r => r.ok ? r.json() : null)
      .then(data => { if (data && data.kind === 'me') { me = data; drawAll(); } })
      .catch(() => {});
  }

  // ------------------------------------------------------------------ live

  let polling = null;
  socket(root.dataset.wsPath, {
    onMessage: (msg) => {
      if (msg.kind === 'hello') { me = msg.me; drawAll(); onPresent(msg.present); }
      else if (msg.kind === 'present') onPresent(msg.present);
      else if (msg.kind === 'notice') { if (msg.me) { me = msg.me; drawAll(); } }
      else if (msg.kind === 'ended') { if (msg.me) { me = msg.me; drawAll(); } onPresent({ ...present, on: false }); }
    },
    onStatus: (state) => {
      if (state === 'live') { setPill($('#feed-status'), 'live', 'ok'); clearInterval(polling); polling = null; }
      else {
        setPill($('#feed-status'), state.startsWith('closed') ? 'join again' : 'reconnecting…', state.startsWith('closed') ? 'bad' : 'warn');
        if (!polling) polling = setInterval(refresh, 10000);
      }
    },
  });

  drawAll();
  onPresent(present);
})();
