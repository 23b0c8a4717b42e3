// ferry dashboard UI: plain JS, no build step. Data from /api, live changes from /api/events (SSE).
'use strict';
const main = document.getElementById('main');
const statusEl = document.getElementById('status');
let route = { page: 'list' };
let selectedCell = null;
let sweepTimer = null;
let lastLoad = 0;

const pct = (v) => (v * 100).toFixed(1) + '%';
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const eta = (ms) => (ms > 0 ? (ms > 3600e3 ? (ms / 3600e3).toFixed(1) + ' h' : ms > 60e3 ? Math.round(ms / 60e3) + ' min' : Math.round(ms / 1e3) + ' s') : '');
async function get(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return r.json();
}

function parseRoute() {
  const m = /^#\/sweep\/([^/]+)/.exec(location.hash);
  route = m ? { page: 'sweep', id: decodeURIComponent(m[1]) } : { page: 'list' };
  selectedCell = null;
}

async function renderList() {
  sweepView = null;
  const sweeps = await get('/api/sweeps');
  main.innerHTML = '<h2>Sweeps</h2>' + (sweeps.length === 0 ? '<p class="muted">No sweep yet: submit one with <code>ferry sweep submit</code> or <code>ferry run</code>.</p>' :
    '<table id="sweeps"><tr><th>sweep</th><th>name</th><th>cells</th><th>done</th><th>running</th><th>failed</th><th>created</th></tr>' +
    sweeps.map((s) => `<tr><td><a href="#/sweep/${encodeURIComponent(s.sweepId)}">${esc(s.sweepId)}</a></td><td>${esc(s.name)}</td><td class="num">${s.cells}</td><td class="num">${s.done}</td><td class="num">${s.running}</td><td class="num">${s.failed}</td><td>${esc(s.createdAt)}</td></tr>`).join('') + '</table>');
}

function accText(c) {
  const mean = c.n > 1 ? `${pct(c.mean)} ± ${(c.std * 100).toFixed(1)}` : pct(c.mean);
  return c.ci95 ? `${mean} <span class="ci">[${(c.ci95[0] * 100).toFixed(1)}, ${(c.ci95[1] * 100).toFixed(1)}]</span>` : mean;
}

function tableHtml(t, id) {
  if (t.rows.length === 0) return '<p class="muted" id="table-empty">The comparison table fills in as cells finish.</p>';
  const head = '<tr><th>dataset</th><th>color</th><th>model</th>' + t.strategies.map((s) => `<th title="${esc((t.semantics || {})[s] || '')}">${esc(s)}</th><th>best epoch</th><th>time</th><th>img/s</th>`).join('') + '<th>verdict</th></tr>';
  const rows = t.rows.map((r) => '<tr>' + `<td>${esc(r.dataset)}</td><td>${esc(r.color)}</td><td>${esc(r.model)}</td>` + t.strategies.map((s) => {
    const c = r.byStrategy[s];
    if (!c) return '<td>-</td><td></td><td></td><td></td>';
    return `<td class="num acc ${r.winner === s ? 'winner' : ''}" data-strategy="${esc(s)}">${accText(c)}</td><td class="num">${(c.bestEpochMean + 1).toFixed(1)}</td><td class="num">${(c.wallMsMean / 1000).toFixed(1)} s</td><td class="num">${c.imagesPerSecMean.toFixed(1)}</td>`;
  }).join('') + `<td class="verdict ${r.winner ? '' : 'noise'}">${esc(r.verdict)}</td></tr>`).join('');
  const colors = (t.colorComparisons || []).length === 0 ? '' :
    '<h3>rgb against gray, on the same images</h3><table id="color-table"><tr><th>dataset</th><th>model</th><th>strategy</th><th>rgb</th><th>gray</th><th>verdict</th></tr>' +
    t.colorComparisons.map((c) => `<tr><td>${esc(c.dataset)}</td><td>${esc(c.model)}</td><td>${esc(c.strategy)}</td><td class="num ${c.comparison.winner === 'rgb' ? 'winner' : ''}">${accText(c.rgb)}</td><td class="num ${c.comparison.winner === 'gray' ? 'winner' : ''}">${accText(c.gray)}</td><td class="verdict ${c.comparison.winner ? '' : 'noise'}">${esc(c.verdict)}</td></tr>`).join('') + '</table>';
  const q = encodeURIComponent(id);
  const legend = `<ul id="legend" class="muted">${t.strategies.map((s) => `<li><b>${esc(s)}</b>: ${esc((t.semantics || {})[s] || '')}</li>`).join('')}` +
    `<li>[low, high]: 95% Wilson interval on the val images pooled over seeds; a verdict names a winner only when p &lt; ${esc(t.alpha)}.</li></ul>`;
  return `<table id="table">${head}${rows}</table>${colors}${legend}<div>export: <a href="/api/sweeps/${q}/table?format=csv">CSV</a> · <a href="/api/sweeps/${q}/table?format=md">Markdown</a> · <a href="/api/sweeps/${q}/table?format=json">JSON</a></div>`;
}

function curveSvg(points, key1, key2, label, max) {
  const W = 360, H = 200, P = 34;
  const n = Math.max(1, points.length - 1);
  const ys = points.flatMap((p) => [p[key1], p[key2]]).filter(Number.isFinite);
  const top = max ?? Math.max(0.1, ...ys);
  const x = (i) => P + (i / n) * (W - P - 8);
  const y = (v) => 8 + (1 - v / top) * (H - P - 8);
  const line = (k, color) => `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map((p, i) => x(i).toFixed(1) + ',' + y(p[k]).toFixed(1)).join(' ')}"/>`;
  return `<svg class="curve" data-points="${points.length}" width="${W}" height="${H}"><text x="${P}" y="${H - 6}" font-size="11">${label} (blue train, red val) per epoch</text>` +
    `<text x="2" y="14" font-size="10">${top.toFixed(2)}</text><text x="2" y="${H - P}" font-size="10">0</text>` + line(key1, '#1f77b4') + line(key2, '#d62728') + '</svg>';
}

async function renderCell(id) {
  const box = document.getElementById('cell');
  if (!box) return;
  const c = await get('/api/cells/' + encodeURIComponent(id));
  const cm = c.confusion.length ? '<h3>Confusion matrix (rows: true, columns: predicted)</h3><table class="cm">' +
    '<tr><th></th>' + c.confusion.map((_, j) => `<th>${esc(c.classes[j] ?? j)}</th>`).join('') + '<th>accuracy</th></tr>' +
    c.confusion.map((row, i) => `<tr><th>${esc(c.classes[i] ?? i)}</th>` + row.map((v) => `<td>${v}</td>`).join('') + `<td class="num">${c.perClassAccuracy[i] !== undefined ? pct(c.perClassAccuracy[i]) : ''}</td></tr>`).join('') + '</table>' : '';
  box.innerHTML = `<h2>Cell ${esc(c.cellId)}: ${esc(c.dataset)} ${esc(c.color)} ${esc(c.strategy)} ${esc(c.model)} seed ${c.seed}</h2>` +
    `<p>${esc(c.state)}, epoch ${c.epoch}/${c.epochs}, best val ${pct(c.bestValAccuracy)}${c.error ? ' — <span class="state-failed">' + esc(c.error) + '</span>' : ''}</p>` +
    `<div class="panels" id="curves">${curveSvg(c.curves, 'trainLoss', 'valLoss', 'loss')}${curveSvg(c.curves, 'trainAccuracy', 'valAccuracy', 'accuracy', 1)}</div>${cm}`;
}

/** The inner cells of a cell's row (its <tr> is kept across updates). */
function cellRow(c) {
  return `<td>${esc(c.dataset)}</td><td>${esc(c.color)}</td><td>${esc(c.strategy)}</td><td>${esc(c.model)}</td><td class="num">${c.seed}</td>` +
    `<td class="state-${esc(c.state)}">${esc(c.state)}</td><td><span class="bar"><span style="width:${(c.progress * 100).toFixed(1)}%"></span></span> ${c.epoch}/${c.epochs}</td><td>${eta(c.etaMs)}</td><td class="num">${c.imagesPerSec ? c.imagesPerSec.toFixed(1) : ''}</td>` +
    `<td class="num">${c.bestValAccuracy ? pct(c.bestValAccuracy) : ''}</td><td>${esc(c.worker)}</td><td class="num">${c.attempts}</td><td>${esc(c.error).slice(0, 80)}</td>`;
}

/** Sets an element's HTML only when it changed (no re-layout, no lost selection or scroll). */
function setHtml(id, html) {
  const el = document.getElementById(id);
  if (el && el.dataset.html !== html) {
    el.innerHTML = html;
    el.dataset.html = html;
  }
}

// The sweep page is built once per sweep and cell list; live updates then touch only what changed:
// the rows whose text changed, the summary, the comparison and workers tables.
let sweepView = null;

async function renderSweep() {
  lastLoad = Date.now();
  const s = await get('/api/sweeps/' + encodeURIComponent(route.id));
  const ids = s.cells.map((c) => c.cellId).join('\n');
  if (!sweepView || sweepView.sweepId !== s.sweepId || sweepView.ids !== ids || !document.getElementById('cells')) {
    main.innerHTML = `<h2>${esc(s.name)} <span class="muted">${esc(s.sweepId)}</span></h2><p id="summary"></p>` +
      '<h3>Comparison (best val accuracy)</h3><div id="comparison"></div><h3>Workers</h3><div id="workers-box"></div><div id="processes"></div>' +
      '<h3>Cells</h3><table id="cells"><tr><th>dataset</th><th>color</th><th>strategy</th><th>model</th><th>seed</th><th>state</th><th>progress</th><th>ETA</th><th>img/s</th><th>best val</th><th>worker</th><th>attempts</th><th>error</th></tr>' +
      s.cells.map((c) => `<tr class="cell" data-cell="${esc(c.cellId)}"></tr>`).join('') + '</table><div id="cell"></div>';
    const trs = new Map([...main.querySelectorAll('#cells tr.cell')].map((tr) => [tr.dataset.cell, tr]));
    sweepView = { sweepId: s.sweepId, ids, trs, rows: new Map() };
  }
  for (const c of s.cells) {
    const html = cellRow(c);
    const tr = sweepView.trs.get(c.cellId);
    if (sweepView.rows.get(c.cellId) !== html) {
      tr.innerHTML = html;
      sweepView.rows.set(c.cellId, html);
    }
    tr.classList.toggle('selected', c.cellId === selectedCell);
  }
  const done = s.cells.filter((c) => c.state === 'done').length;
  const summary = document.getElementById('summary');
  const text = `${done}/${s.cells.length} cells done`;
  if (summary.textContent !== text) summary.textContent = text;
  setHtml('comparison', tableHtml(s.table, s.sweepId));
  setHtml('workers-box', '<table id="workers"><tr><th>worker</th><th>state</th><th>backend</th><th>device</th><th>img/s</th><th>cell</th></tr>' +
    s.workers.map((w) => `<tr><td>${esc(w.name)}</td><td>${esc(w.state)}</td><td>${esc(w.backend)}</td><td>${esc(w.device)}</td><td class="num">${w.imagesPerSec ? w.imagesPerSec.toFixed(1) : ''}</td><td>${esc(w.cellId)}</td></tr>`).join('') + '</table>');
  setHtml('processes', processesHtml(s.processes || []));
  if (selectedCell) await renderCell(selectedCell);
}

// Children of `ferry run` that exited unexpectedly: each crash, restart and crash loop.
function processesHtml(ps) {
  if (ps.length === 0) return '';
  const what = { crashed: 'exited unexpectedly', restarted: 'restarted', 'gave-up': 'crash loop: not restarted' };
  return '<h3>Process restarts</h3><table id="process-events"><tr><th>time</th><th>process</th><th>event</th><th>exit</th><th>restarts</th><th>last log line</th></tr>' +
    ps.map((p) => `<tr class="process-${esc(p.state)}"><td>${esc(new Date(p.time).toLocaleTimeString())}</td><td>${esc(p.name)}</td><td>${esc(what[p.state] || p.state)}</td><td>${esc(p.exit)}</td>` +
      `<td class="num">${esc(String(p.restarts || ''))}</td><td title="${esc(p.log)}">${esc(p.logTail.length ? p.logTail[p.logTail.length - 1] : '')}</td></tr>`).join('') + '</table>';
}

// One listener for every row (rows are kept across updates): a click selects the cell.
main.addEventListener('click', (e) => {
  const tr = e.target instanceof Element ? e.target.closest('#cells tr.cell') : null;
  if (!tr) return;
  selectedCell = tr.dataset.cell;
  void renderSweep();
});

async function render() {
  try {
    if (route.page === 'sweep') await renderSweep(); else await renderList();
  } catch (e) {
    main.innerHTML = '<p class="state-failed">' + esc(e.message) + '</p>';
  }
}

function schedule() {
  // At most two re-renders a second, whatever the event rate (1,000 cells stay responsive).
  if (sweepTimer) return;
  sweepTimer = setTimeout(() => { sweepTimer = null; void render(); }, Math.max(0, 500 - (Date.now() - lastLoad)));
}

const es = new EventSource('/api/events');
es.onopen = () => { statusEl.textContent = 'live'; };
es.onerror = () => { statusEl.textContent = 'reconnecting…'; };
es.onmessage = (m) => {
  const d = JSON.parse(m.data);
  statusEl.textContent = 'live · updated ' + new Date().toLocaleTimeString();
  if (route.page === 'list' || (route.page === 'sweep' && (d.sweeps.includes(route.id) || d.workers))) schedule();
};
window.addEventListener('hashchange', () => { parseRoute(); void render(); });
parseRoute();
void render();
