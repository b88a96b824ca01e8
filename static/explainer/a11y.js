/* Accessibility the site frame gives every page: text alternatives for every Mermaid diagram,
   and keyboard access to every box that scrolls.

   Theory of operation: Mermaid draws an <svg> with no accessible name, so a screen reader
   announces "image" and nothing else (axe: svg-img-alt). Pages render diagrams in several
   places (dashboard, lessons, predict exercises, lab results, workshop screens), so instead
   of labelling at each call site, this script (loaded by the one site frame,
   explainer/templates/lblab/base.html) watches the document and names each diagram SVG as
   it appears:
     1. a page that knows better says so: `data-diagram-label` on the SVG's container (or any
        ancestor) is used as is (the dashboard's topology summary, for example);
     2. otherwise the label is built from what the reader can see: the kind of diagram
        (flowchart, sequence, state), the figure caption or the nearest heading before it,
        and the first labels drawn in it (participants, nodes, states).
   A label set by the page itself (aria-label / aria-labelledby) is never overwritten.
   window.LBLabDiagrams.label(svg, text) lets a page (re)label one SVG directly.

   A box that scrolls (a wide table in its .table-wrap, a long list) must be reachable from the
   keyboard, or its hidden part is out of reach without a mouse (axe:
   scrollable-region-focusable). Whether a box overflows depends on the window and the data,
   so shortly after each change of the page every such box that really overflows and has
   nothing focusable inside becomes a named, focusable region. */
(function () {
  'use strict';

  const KINDS = {
    'flowchart-v2': 'Flowchart', flowchart: 'Flowchart', graph: 'Flowchart',
    sequence: 'Sequence diagram', stateDiagram: 'State diagram', 'stateDiagram-v2': 'State diagram',
    classDiagram: 'Class diagram', gantt: 'Timeline', pie: 'Pie chart', xychart: 'Chart',
    timeline: 'Timeline', block: 'Block diagram',
  };
  const MAX_LABELS = 12;
  const MAX_CHARS = 400;

  function squash(text) { return (text || '').replace(/\s+/g, ' ').trim(); }

  function kindOf(svg) {
    const role = svg.getAttribute('aria-roledescription') || '';
    return KINDS[role] || (role.startsWith('state') ? 'State diagram' : 'Diagram');
  }

  function pageLabel(svg) {
    const host = svg.parentElement && svg.parentElement.closest('[data-diagram-label]');
    return host ? squash(host.getAttribute('data-diagram-label')) : '';
  }

  function titleOf(svg) {
    const fig = svg.closest('figure');
    const cap = fig && fig.querySelector('figcaption');
    if (cap && squash(cap.textContent)) return squash(cap.textContent);
    // the nearest heading before the diagram in document order
    const heads = Array.from(document.querySelectorAll('h1, h2, h3, h4'));
    let best = '';
    for (const h of heads) {
      if (h.compareDocumentPosition(svg) & Node.DOCUMENT_POSITION_FOLLOWING) best = squash(h.textContent);
      else break;
    }
    return best;
  }

  // A label's words, line breaks (<br>, <tspan>) read as spaces: "listener web L7 · http".
  function wordsOf(node) {
    const parts = [];
    const walk = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    while (walk.nextNode()) parts.push(walk.currentNode.nodeValue);
    return squash(parts.join(' '));
  }

  function drawnLabels(svg) {
    const seen = new Set();
    for (const node of svg.querySelectorAll('.nodeLabel, text.actor, .actor-man text, text')) {
      const t = wordsOf(node);
      if (t && !seen.has(t)) seen.add(t);
      if (seen.size >= MAX_LABELS) break;
    }
    return Array.from(seen);
  }

  function describe(svg) {
    const fromPage = pageLabel(svg);
    if (fromPage) return fromPage;
    const title = titleOf(svg);
    const labels = drawnLabels(svg);
    let text = kindOf(svg) + (title ? `: ${title.replace(/[.:]$/, '')}` : '');
    if (labels.length) text += `. Shows ${labels.join(', ')}`;
    return text.length > MAX_CHARS ? text.slice(0, MAX_CHARS - 1) + '…' : text;
  }

  function label(svg, text) {
    svg.setAttribute('role', 'img');
    svg.removeAttribute('aria-labelledby');
    svg.setAttribute('aria-label', squash(text) || describe(svg));
  }

  function isDiagram(svg) {
    // Mermaid marks its SVGs with aria-roledescription; icons and charts are left alone.
    return svg.hasAttribute('aria-roledescription') || /^c?mmd-|^mermaid/.test(svg.id || '');
  }

  // Mermaid builds each SVG in a scratch element (id "d" + the SVG's id) at the end of
  // <body>, then hands it over as text: only the copy the page inserts is named, once it is
  // complete and in its place (its heading, its caption).
  function inScratch(svg) {
    const scratch = svg.id && document.getElementById('d' + svg.id);
    return !!(scratch && scratch.contains(svg));
  }

  function labelIfNeeded(svg) {
    if (!isDiagram(svg) || inScratch(svg)) return;
    if (svg.getAttribute('aria-label')) return;
    const by = svg.getAttribute('aria-labelledby');
    if (by && by.split(/\s+/).some(id => squash((document.getElementById(id) || {}).textContent))) return;
    label(svg, describe(svg));
  }

  function scan(root) {
    if (root.nodeType !== 1) return;
    if (root.tagName && root.tagName.toLowerCase() === 'svg') labelIfNeeded(root);
    root.querySelectorAll && root.querySelectorAll('svg').forEach(labelIfNeeded);
  }

  const SCROLLERS = '.table-wrap, .scroll-region, .coverage-wrap, .diagram-box, pre';
  const SCROLLS = /(auto|scroll)/;
  const FOCUSABLE = 'a[href], button, input, select, textarea, [tabindex]';
  function regionName(box) {
    const cap = box.querySelector('caption');
    if (cap && squash(cap.textContent)) return squash(cap.textContent);
    const head = box.querySelector('th');
    return head ? `Table: ${squash(head.closest('tr').textContent).slice(0, 80)}` : 'Scrolling content';
  }
  function markScrollers() {
    document.querySelectorAll(SCROLLERS).forEach(box => {
      const style = getComputedStyle(box);
      const overflows = (SCROLLS.test(style.overflowX) && box.scrollWidth > box.clientWidth + 1)
        || (SCROLLS.test(style.overflowY) && box.scrollHeight > box.clientHeight + 1);
      if (box.dataset.a11yRegion === '1' && !overflows) {
        box.removeAttribute('tabindex'); box.removeAttribute('role'); box.removeAttribute('aria-label');
        delete box.dataset.a11yRegion;
      } else if (overflows && !box.hasAttribute('tabindex') && !box.querySelector(FOCUSABLE)) {
        box.setAttribute('tabindex', '0');
        box.setAttribute('role', 'region');
        if (!box.getAttribute('aria-label')) box.setAttribute('aria-label', regionName(box));
        box.dataset.a11yRegion = '1';
      }
    });
  }
  let scrollTimer = null;
  // at most every 300 ms: a live page (the dashboard) changes several times a second
  function soon() {
    if (!scrollTimer) scrollTimer = setTimeout(() => { scrollTimer = null; markScrollers(); }, 300);
  }

  new MutationObserver(records => {
    for (const r of records) r.addedNodes.forEach(scan);
    soon();
  }).observe(document.documentElement, { childList: true, subtree: true });
  document.addEventListener('DOMContentLoaded', () => { scan(document.body); markScrollers(); });
  window.addEventListener('resize', soon);

  window.LBLabDiagrams = { label, describe };
})();
