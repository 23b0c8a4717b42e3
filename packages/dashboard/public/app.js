// @ts-check
// ferry dashboard UI: an ES module, no build step (type-checked from JSDoc: tsconfig.public.json).
// Data from /api, live changes from /api/events (SSE); charts by chart.js (FerryChart).
import { FerryChart } from './chart.js';
/** @typedef {import('./chart.js').ChartSpec} ChartSpec */
/** @typedef {{ key: string, dir: 'asc' | 'desc' }} Sort */
/** @typedef {{ page: 'list' | 'sweep', id: string, cells: string[], sort: Sort | null, q: string, norm: boolean }} Route */

/** @param {string} id @returns {HTMLElement} an element the page always has */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const main = byId('main');
const statusEl = byId('status');
/** @type {Route} */
const LIST = { page: 'list', id: '', cells: [], sort: null, q: '', norm: false };
/** @type {Route} */
let route = LIST;
/** @type {ReturnType<typeof setTimeout> | null} */
let sweepTimer = null;
let lastLoad = 0;

/** @param {number} v */
const pct = (v) => (v * 100).toFixed(1) + '%';
/** @param {unknown} s */
const esc = (s) =>
  String(s).replace(
    /[&<>"']/g,
    (c) =>
      /** @type {Record<string, string>} */ ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[
        c
      ] ?? c,
  );
/** @param {number} ms */
const eta = (ms) =>
  ms > 0
    ? ms > 3600e3
      ? (ms / 3600e3).toFixed(1) + ' h'
      : ms > 60e3
        ? Math.round(ms / 60e3) + ' min'
        : Math.round(ms / 1e3) + ' s'
    : '';
/**
 * @param {string} path
 * @returns {Promise<any>} the JSON answer (its type is the caller's: the API's types in globals.d.ts)
 */
async function get(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return r.json();
}

// The page's state lives in the URL: #/sweep/<id>?cells=a,b&sort=key:dir&q=text&norm=1, so a
// view can be bookmarked, shared and restored by the back button.
function parseRoute() {
  const m = /^#\/sweep\/([^/?]+)(?:\?(.*))?$/.exec(location.hash);
  if (!m) {
    route = LIST;
    return;
  }
  const q = new URLSearchParams(m[2] || '');
  const [key, dir] = (q.get('sort') || '').split(':');
  route = {
    page: 'sweep',
    id: decodeURIComponent(m[1] ?? ''),
    cells: (q.get('cells') || '').split(',').filter(Boolean),
    sort: key ? { key, dir: dir === 'desc' ? 'desc' : 'asc' } : null,
    q: q.get('q') || '',
    norm: q.get('norm') === '1',
  };
}

function writeRoute() {
  const q = new URLSearchParams();
  if (route.cells.length) q.set('cells', route.cells.join(','));
  if (route.sort) q.set('sort', route.sort.key + ':' + route.sort.dir);
  if (route.q) q.set('q', route.q);
  if (route.norm) q.set('norm', '1');
  const text = q.toString();
  history.replaceState(null, '', '#/sweep/' + encodeURIComponent(route.id) + (text ? '?' + text : ''));
}

async function renderList() {
  sweepView = null;
  /** @type {SweepListItem[]} */
  const sweeps = await get('/api/sweeps');
  main.innerHTML =
    '<h2>Sweeps</h2>' +
    (sweeps.length === 0
      ? '<p class="muted">No sweep yet: submit one with <code>ferry sweep submit</code> or <code>ferry run</code>.</p>'
      : '<table id="sweeps"><tr><th>sweep</th><th>name</th><th>cells</th><th>done</th><th>running</th><th>failed</th><th>blocked</th><th>created</th></tr>' +
        sweeps
          .map(
            (s) =>
              `<tr><td><a href="#/sweep/${encodeURIComponent(s.sweepId)}">${esc(s.sweepId)}</a></td><td>${esc(s.name)}</td><td class="num">${s.cells}</td><td class="num">${s.done}</td><td class="num">${s.running}</td><td class="num">${s.failed}</td><td class="num">${s.blocked}</td><td>${esc(s.createdAt)}</td></tr>`,
          )
          .join('') +
        '</table>');
}

/** @param {import('@ferry/common').TableCell} c */
function accText(c) {
  const mean = c.n > 1 ? `${pct(c.mean)} ± ${(c.std * 100).toFixed(1)}` : pct(c.mean);
  return c.ci95
    ? `${mean} <span class="ci">[${(c.ci95[0] * 100).toFixed(1)}, ${(c.ci95[1] * 100).toFixed(1)}]</span>`
    : mean;
}

/**
 * The best epoch, counted from 1: one seed's as a whole number, a mean over seeds to a tenth
 * (@ferry/common's bestEpochText, which the browser code cannot import yet).
 * @param {import('@ferry/common').TableCell} c
 */
function bestEpochText(c) {
  return c.n > 1 ? (c.bestEpochMean + 1).toFixed(1) : String(Math.round(c.bestEpochMean + 1));
}

/**
 * @param {ResultsTable} t
 * @param {string} id
 */
function tableHtml(t, id) {
  if (t.rows.length === 0)
    return '<p class="muted" id="table-empty">The comparison table fills in as cells finish.</p>';
  const head =
    '<tr><th>dataset</th><th>color</th><th>model</th>' +
    t.strategies
      .map(
        (s) =>
          `<th title="${esc((t.semantics || {})[s] || '')}">${esc(s)}</th><th>best epoch</th><th>time</th><th>img/s</th>`,
      )
      .join('') +
    '<th>verdict</th>' +
    (t.advisor
      ? '<th title="a heuristic: the advisor\'s prediction before training, not a measurement">advisor (heuristic)</th>'
      : '') +
    '</tr>';
  /** @param {ResultsTable['rows'][number]} r */
  const advice = (r) =>
    t.advisor
      ? `<td class="advice" title="heuristic: the advisor's prediction (finetune minus freeze, points), not a measurement">${esc(r.advice ? r.advice.text : '-')}</td>`
      : '';
  const rows = t.rows
    .map(
      (r) =>
        '<tr>' +
        `<td>${esc(r.dataset)}${groupText(r.group)}</td><td>${esc(r.color)}</td><td>${esc(r.model)}</td>` +
        t.strategies
          .map((s) => {
            const c = r.byStrategy[s];
            if (!c) return '<td>-</td><td></td><td></td><td></td>';
            return `<td class="num acc ${r.winner === s ? 'winner' : ''}" data-strategy="${esc(s)}">${accText(c)}</td><td class="num best-epoch" data-strategy="${esc(s)}">${bestEpochText(c)}</td><td class="num">${(c.wallMsMean / 1000).toFixed(1)} s</td><td class="num">${c.imagesPerSecMean.toFixed(1)}</td>`;
          })
          .join('') +
        `<td class="verdict ${r.winner ? '' : 'noise'}">${esc(r.verdict)}</td>${advice(r)}</tr>`,
    )
    .join('');
  const colors =
    (t.colorComparisons || []).length === 0
      ? ''
      : '<h3>rgb against gray, on the same images</h3><table id="color-table"><tr><th>dataset</th><th>model</th><th>strategy</th><th>rgb</th><th>gray</th><th>verdict</th></tr>' +
        t.colorComparisons
          .map(
            (c) =>
              `<tr><td>${esc(c.dataset)}</td><td>${esc(c.model)}</td><td>${esc(c.strategy)}</td><td class="num ${c.comparison.winner === 'rgb' ? 'winner' : ''}">${accText(c.rgb)}</td><td class="num ${c.comparison.winner === 'gray' ? 'winner' : ''}">${accText(c.gray)}</td><td class="verdict ${c.comparison.winner ? '' : 'noise'}">${esc(c.verdict)}</td></tr>`,
          )
          .join('') +
        '</table>';
  const q = encodeURIComponent(id);
  const legend =
    `<ul id="legend" class="muted">${t.strategies.map((s) => `<li><b>${esc(s)}</b>: ${esc((t.semantics || {})[s] || '')}</li>`).join('')}` +
    `<li>[low, high]: 95% Wilson interval on the val images pooled over seeds; a verdict names a winner only when p &lt; ${esc(t.alpha)}.</li>` +
    (t.advisor ? `<li id="advisor-legend">${esc(t.advisor.legend)}</li>` : '') +
    '</ul>';
  return `<table id="table">${head}${rows}</table>${colors}${legend}<div>export: <a href="/api/sweeps/${q}/table?format=csv">CSV</a> · <a href="/api/sweeps/${q}/table?format=md">Markdown</a> · <a href="/api/sweeps/${q}/table?format=json">JSON</a></div>`;
}

/** @type {Map<string, { chart: Chart, key: string }>} chart box id -> its chart and what it shows */
const charts = new Map();
// The drawn charts, for a look from the browser's console (and the end-to-end tests): window.ferry.charts.
window.ferry = { charts };
// Charts take their colours from the page's (light or dark) palette: redrawn when it changes.
const DARK = matchMedia('(prefers-color-scheme: dark)');
DARK.addEventListener('change', () => {
  if (route.page === 'sweep') void renderSelection();
});

/**
 * A row's settings besides dataset, color and model (a sweep axis such as lr), shown after the dataset.
 * @param {Record<string, unknown> | undefined} group
 */
const groupText = (group) => {
  const parts = Object.entries(group || {}).map(([k, v]) => `${k} ${String(v)}`);
  return parts.length ? ` <span class="group">(${esc(parts.join(', '))})</span>` : '';
};

/** @param {CellDetail} c */
const cellName = (c) => `${c.dataset} ${c.color} ${c.strategy} s${c.seed}`;

/**
 * The selected cells' legends: each cell's name, and its starting weights where two cells' names
 * would read the same (the pretrained and the random-weights freeze of one seed).
 * @param {CellDetail[]} cells
 */
function legendNames(cells) {
  const names = cells.map(cellName);
  return names.map((n, i) => (names.filter((m) => m === n).length > 1 ? `${n} ${cells[i]?.weights ?? ''}` : n));
}

/**
 * A chart of the selected cells in box `boxId`: kept and fed new data while its cells, the layout
 * and the colour scheme stay the same, drawn anew otherwise.
 * @param {string} boxId
 * @param {CellDetail[]} cells
 * @param {ChartSpec} spec
 */
function plotCells(boxId, cells, spec) {
  const box = document.getElementById(boxId);
  if (!box) return;
  const wide = document.body.clientWidth > 700 ? 'wide' : 'narrow';
  const scheme = DARK.matches ? 'dark' : 'light';
  const key = [spec.title, cells.map((x) => x.cellId).join(','), wide, scheme].join('|');
  const old = charts.get(boxId);
  if (old && old.key === key && document.body.contains(old.chart.plot.root)) {
    old.chart.update(spec);
    return;
  }
  if (old) old.chart.plot.destroy();
  const width = Math.min(720, Math.max(280, (box.parentElement?.clientWidth ?? 720) - 16));
  charts.set(boxId, { chart: FerryChart.plot(box, spec, width), key });
  box.dataset.scheme = scheme;
}

/**
 * A metric per epoch of the selected cells.
 * @param {string} boxId
 * @param {string} title
 * @param {CellDetail[]} cells
 * @param {'valAccuracy' | 'trainLoss'} metric
 * @param {boolean} asPercent
 */
function drawChart(boxId, title, cells, metric, asPercent) {
  const labels = legendNames(cells);
  const series = cells.map((c, i) => ({
    label: labels[i] ?? cellName(c),
    values: c.curves.map((p) => p[metric]),
    best: c.bestEpoch,
  }));
  plotCells(boxId, cells, FerryChart.epochChart(title, title, series, asPercent));
}

/**
 * Step-level training loss of the selected cells (x: epochs elapsed), where the workers published it.
 * @param {string} boxId
 * @param {CellDetail[]} cells
 */
function drawStepChart(boxId, cells) {
  plotCells(
    boxId,
    cells,
    FerryChart.stepChart(
      legendNames(cells),
      cells.map((c) => [...(c.steps || [])]),
    ),
  );
}

/** A confusion matrix as a heat map (shade: share of the true class); counts or row percentages. */
/**
 * @param {CellDetail} c
 * @param {boolean} norm
 */
function heatmapHtml(c, norm) {
  if (!c.confusion.length) return '';
  const head =
    '<tr><th scope="col">true \\ predicted</th>' +
    c.confusion.map((_, j) => `<th scope="col">${esc(c.classes[j] ?? j)}</th>`).join('') +
    '</tr>';
  const rows = c.confusion
    .map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0);
      return (
        `<tr><th scope="row">${esc(c.classes[i] ?? i)}</th>` +
        row
          .map((v) => {
            const share = total ? v / total : 0;
            return `<td class="num heat" style="--share:${share.toFixed(3)}" title="${v} of ${total}">${norm ? (share * 100).toFixed(0) + '%' : v}</td>`;
          })
          .join('') +
        '</tr>'
      );
    })
    .join('');
  return `<figure class="heatmap" data-cell="${esc(c.cellId)}"><table class="cm">${head}${rows}</table><figcaption>${esc(c.dataset)} ${esc(c.color)} ${esc(c.strategy)} seed ${c.seed}: best val ${pct(c.bestValAccuracy)}</figcaption></figure>`;
}

/** Per-class accuracy of the selected cells side by side. */
/** @param {CellDetail[]} cells */
function perClassHtml(cells) {
  const classes = cells.find((c) => c.classes.length)?.classes ?? [];
  if (!classes.length) return '';
  return (
    '<table id="per-class"><tr><th scope="col">class</th>' +
    cells.map((c) => `<th scope="col">${esc(c.strategy)} ${esc(c.color)} s${c.seed}</th>`).join('') +
    '</tr>' +
    classes
      .map(
        (name, i) =>
          `<tr><th scope="row">${esc(name)}</th>` +
          cells
            .map((c) => `<td class="num">${c.perClassAccuracy[i] !== undefined ? pct(c.perClassAccuracy[i]) : ''}</td>`)
            .join('') +
          '</tr>',
      )
      .join('') +
    '</table>'
  );
}

/** The selected cells: overlaid curves, heat maps, per-class accuracy. */
async function renderSelection() {
  const box = document.getElementById('cell');
  if (!box) return;
  if (route.cells.length === 0) {
    for (const c of charts.values()) c.chart.plot.destroy();
    charts.clear();
    box.innerHTML =
      '<p class="muted" id="select-hint">Select cells (click, or Enter on a row) to overlay their curves.</p>';
    return;
  }
  /** @type {(CellDetail | null)[]} */
  const got = await Promise.all(route.cells.map((id) => get('/api/cells/' + encodeURIComponent(id)).catch(() => null)));
  const cells = got.filter((c) => c !== null);
  if (!document.getElementById('overlay')) {
    box.innerHTML =
      '<h3>Selected cells</h3><div class="panels"><div class="chart-box"><div id="overlay"></div></div><div class="chart-box"><div id="loss"></div></div></div>' +
      '<h3>Confusion matrices <label><input type="checkbox" id="norm"> normalised (share of each true class)</label></h3><div id="heatmaps" class="panels"></div>' +
      '<h3>Per-class accuracy</h3><div id="per-class-box" class="scroll"></div>';
  }
  /** @type {HTMLInputElement} */ (byId('norm')).checked = route.norm;
  drawChart('overlay', 'val accuracy', cells, 'valAccuracy', true);
  if (cells.some((c) => c.steps && c.steps.length > 1)) drawStepChart('loss', cells);
  else drawChart('loss', 'train loss', cells, 'trainLoss', false);
  setHtml('heatmaps', cells.map((c) => heatmapHtml(c, route.norm)).join(''));
  setHtml('per-class-box', perClassHtml(cells));
}

/**
 * The cells of a cell's row, as [class, html] per column. Its <tr> and <td>s are kept across updates
 * and only a <td> whose content changed is written (a progress tick touches two cells, not a row).
 */
/**
 * @param {CellSummary} c
 * @param {boolean} selected
 * @returns {[string, string][]}
 */
function cellRow(c, selected) {
  return [
    ['', `<input type="checkbox" tabindex="-1" aria-label="select"${selected ? ' checked' : ''}>`],
    ['', esc(c.dataset)],
    ['', esc(c.color)],
    ['', esc(c.strategy)],
    ['', esc(c.model)],
    ['weights', esc(c.weights)],
    ['num', String(c.seed)],
    [`state-${esc(c.state)}`, esc(c.state)],
    [
      '',
      `<span class="bar"><span style="width:${(c.progress * 100).toFixed(1)}%"></span></span> ${c.epoch}/${c.epochs}`,
    ],
    ['', eta(c.etaMs)],
    ['num', c.imagesPerSec ? c.imagesPerSec.toFixed(1) : ''],
    ['num best-val', c.bestValAccuracy ? pct(c.bestValAccuracy) : ''],
    ['', esc(c.worker)],
    ['num', String(c.attempts)],
    ['', esc(c.error).slice(0, 80)],
  ];
}

/** Sets an element's HTML only when it changed (no re-layout, no lost selection or scroll). */
/**
 * @param {string} id
 * @param {string} html
 */
function setHtml(id, html) {
  const el = document.getElementById(id);
  if (el && el.dataset.html !== html) {
    el.innerHTML = html;
    el.dataset.html = html;
  }
}

// The sweep page is built once per sweep and cell list; live updates then touch only what changed:
// the rows whose text changed, their order (sorting) and visibility (filter), the summary, the
// comparison and workers tables. Nothing is rebuilt, so no flicker and no scroll jump.
/**
 * @typedef {object} SweepView the sweep page as built, and what its rows show now
 * @property {string} sweepId
 * @property {string} ids the cell ids, one a line
 * @property {Map<string, HTMLTableRowElement>} trs
 * @property {Map<string, string[]>} rows per cell, each column's class and HTML as shown
 * @property {Map<string, number>} flags per cell: 1 selected, 2 visible
 * @property {string} order the cell ids in their shown order, one a line
 */
/** @type {SweepView | null} */
let sweepView = null;

const COLUMNS = [
  ['', null],
  ['dataset', 'dataset'],
  ['color', 'color'],
  ['strategy', 'strategy'],
  ['model', 'model'],
  ['weights', 'weights'],
  ['seed', 'seed'],
  ['state', 'state'],
  ['progress', 'progress'],
  ['ETA', 'etaMs'],
  ['img/s', 'imagesPerSec'],
  ['best val', 'bestValAccuracy'],
  ['worker', 'worker'],
  ['attempts', 'attempts'],
  ['error', 'error'],
];

function headerHtml() {
  return (
    '<tr>' +
    COLUMNS.map(([label, key]) => {
      if (!key) return '<th scope="col"><span class="sr">select</span></th>';
      const sorted = route.sort && route.sort.key === key ? route.sort.dir : null;
      const aria = sorted ? ` aria-sort="${sorted === 'asc' ? 'ascending' : 'descending'}"` : ' aria-sort="none"';
      return `<th scope="col" class="sortable" tabindex="0" data-key="${key}"${aria}>${esc(label)}${sorted ? (sorted === 'asc' ? ' ▲' : ' ▼') : ''}</th>`;
    }).join('') +
    '</tr>'
  );
}

/**
 * @param {CellSummary} c
 * @param {string} q
 */
function matches(c, q) {
  if (!q) return true;
  const hay =
    `${c.dataset} ${c.color} ${c.strategy} ${c.model} ${c.weights} seed ${c.seed} ${c.state} ${c.worker} ${c.error}`.toLowerCase();
  return q
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .every((w) => hay.includes(w));
}

/**
 * @param {readonly CellSummary[]} cells
 * @returns {readonly CellSummary[]}
 */
function ordered(cells) {
  if (!route.sort) return cells;
  const { key, dir } = route.sort;
  const sign = dir === 'desc' ? -1 : 1;
  return [...cells].sort((a, b) => {
    const x = /** @type {Record<string, unknown>} */ (a)[key],
      y = /** @type {Record<string, unknown>} */ (b)[key];
    const c =
      typeof x === 'number' && typeof y === 'number'
        ? x - y
        : String(x).localeCompare(String(y), undefined, { numeric: true });
    return sign * c;
  });
}

/**
 * Builds the sweep page for a sweep's cells (once per sweep and cell list).
 * @param {SweepDetail} s
 * @param {string} ids
 * @returns {SweepView}
 */
function buildSweepPage(s, ids) {
  main.innerHTML =
    `<h2>${esc(s.name)} <span class="muted">${esc(s.sweepId)}</span></h2><p id="summary"></p>` +
    '<h3>Comparison (best val accuracy)</h3><div id="comparison" class="scroll"></div><h3>Workers</h3><div id="workers-box" class="scroll"></div><div id="processes" class="scroll"></div>' +
    `<h3>Cells</h3><p><label>filter <input id="filter" type="search" placeholder="e.g. gray freeze" value="${esc(route.q)}"></label> <span id="shown" class="muted"></span></p>` +
    '<div class="scroll"><table id="cells"><thead id="cells-head"></thead><tbody id="cells-body">' +
    s.cells.map((c) => `<tr class="cell" tabindex="0" data-cell="${esc(c.cellId)}"></tr>`).join('') +
    '</tbody></table></div><div id="cell"></div>';
  /** @type {HTMLTableRowElement[]} */
  const rows = [...main.querySelectorAll('#cells tr.cell')].map((tr) => /** @type {HTMLTableRowElement} */ (tr));
  const trs = new Map(rows.map((tr) => [tr.dataset.cell ?? '', tr]));
  for (const c of charts.values()) c.chart.plot.destroy();
  charts.clear();
  return { sweepId: s.sweepId, ids, trs, rows: new Map(), flags: new Map(), order: '' };
}

/**
 * Writes a cell's row: only the <td>s whose content changed, and its selection and visibility only
 * when they changed (1,000 rows update twice a second). Returns whether it is shown.
 * @param {SweepView} view
 * @param {CellSummary} c
 * @param {boolean} selected
 */
function updateRow(view, c, selected) {
  const tr = /** @type {HTMLTableRowElement} */ (view.trs.get(c.cellId));
  const cols = cellRow(c, selected);
  const prev = view.rows.get(c.cellId);
  if (!prev) {
    tr.innerHTML = cols.map(([cls, html]) => `<td${cls ? ` class="${cls}"` : ''}>${html}</td>`).join('');
    view.rows.set(
      c.cellId,
      cols.map(([cls, html]) => cls + '\u0000' + html),
    );
  } else {
    cols.forEach(([cls, html], k) => {
      const key = cls + '\u0000' + html;
      const td = tr.children[k];
      if (prev[k] === key || !td) return;
      td.className = cls;
      td.innerHTML = html;
      prev[k] = key;
    });
  }
  const visible = matches(c, route.q);
  const flags = (selected ? 1 : 0) | (visible ? 2 : 0);
  if (view.flags.get(c.cellId) !== flags) {
    tr.classList.toggle('selected', selected);
    tr.setAttribute('aria-selected', String(selected));
    tr.hidden = !visible;
    view.flags.set(c.cellId, flags);
  }
  return visible;
}

/**
 * The summary, the comparison, workers and restarts tables.
 * @param {SweepDetail} s
 * @param {number} shown
 */
function updateTables(s, shown) {
  const shownText = route.q ? `${shown} of ${s.cells.length} shown` : '';
  const shownEl = byId('shown');
  if (shownEl.textContent !== shownText) shownEl.textContent = shownText;
  const done = s.cells.filter((c) => c.state === 'done').length;
  const summary = byId('summary');
  const blocked = s.cells.filter((c) => c.state === 'blocked').length;
  // Blocked cells never ran: their source (an earlier stage's cell) failed.
  const text = `${done}/${s.cells.length} cells done${blocked ? `, ${blocked} blocked by a failed source` : ''}`;
  if (summary.textContent !== text) summary.textContent = text;
  setHtml('comparison', tableHtml(s.table, s.sweepId));
  setHtml(
    'workers-box',
    '<table id="workers"><tr><th>worker</th><th>state</th><th>host</th><th>slurm job</th><th>backend</th><th>device</th><th>img/s</th><th>cell</th></tr>' +
      s.workers
        .map(
          (w) =>
            `<tr><td>${esc(w.name)}</td><td>${esc(w.state)}</td><td>${esc(w.host)}</td><td>${esc(w.slurmJob)}</td><td>${esc(w.backend)}</td><td>${esc(w.device)}</td><td class="num">${w.imagesPerSec ? w.imagesPerSec.toFixed(1) : ''}</td><td>${esc(w.cellId)}</td></tr>`,
        )
        .join('') +
      '</table>' +
      jobsHtml(s),
  );
  setHtml('processes', processesHtml(s.processes || []));
}

async function renderSweep() {
  lastLoad = Date.now();
  /** @type {SweepDetail} */
  const s = await get('/api/sweeps/' + encodeURIComponent(route.id));
  const ids = s.cells.map((c) => c.cellId).join('\n');
  const view =
    sweepView && sweepView.sweepId === s.sweepId && sweepView.ids === ids && document.getElementById('cells')
      ? sweepView
      : buildSweepPage(s, ids);
  sweepView = view;
  setHtml('cells-head', headerHtml());
  const selectedSet = new Set(route.cells);
  let shown = 0;
  for (const c of s.cells) if (updateRow(view, c, selectedSet.has(c.cellId))) shown++;
  // Reorder the kept rows only when the order changed.
  const order = ordered(s.cells).map((c) => c.cellId);
  if (order.join('\n') !== view.order) {
    const body = byId('cells-body');
    for (const id of order) body.appendChild(/** @type {HTMLTableRowElement} */ (view.trs.get(id)));
    view.order = order.join('\n');
  }
  updateTables(s, shown);
  await renderSelection();
}

/** @param {string} id */
function toggleCell(id) {
  route.cells = route.cells.includes(id) ? route.cells.filter((x) => x !== id) : [...route.cells, id];
  writeRoute();
  void renderSweep();
}

/** @param {string} key */
function sortBy(key) {
  route.sort =
    route.sort && route.sort.key === key
      ? route.sort.dir === 'asc'
        ? { key, dir: 'desc' }
        : null
      : { key, dir: 'asc' };
  writeRoute();
  void renderSweep();
}

// One listener for every row and header (both are kept across updates).
main.addEventListener('click', (e) => {
  const el = e.target instanceof HTMLElement ? e.target : null;
  const th = el?.closest('#cells th.sortable');
  if (th instanceof HTMLElement) return sortBy(th.dataset.key ?? '');
  const tr = el?.closest('#cells tr.cell');
  if (tr instanceof HTMLElement) return toggleCell(tr.dataset.cell ?? '');
});
main.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' && e.key !== ' ') return;
  const el = e.target instanceof HTMLElement ? e.target : null;
  if (el && el.matches('#cells th.sortable')) {
    e.preventDefault();
    sortBy(el.dataset.key ?? '');
  } else if (el && el.matches('#cells tr.cell')) {
    e.preventDefault();
    toggleCell(el.dataset.cell ?? '');
  }
});
main.addEventListener('input', (e) => {
  if (e.target instanceof HTMLInputElement && e.target.id === 'filter') {
    route.q = e.target.value;
    writeRoute();
    void renderSweep();
  }
});
main.addEventListener('change', (e) => {
  if (e.target instanceof HTMLInputElement && e.target.id === 'norm') {
    route.norm = e.target.checked;
    writeRoute();
    void renderSelection();
  }
});

/**
 * The workers' Slurm jobs: a queued job is a worker to come (with Slurm's reason), an ended one
 * says how it ended (its cell resumed elsewhere).
 * @param {SweepDetail} s
 */
function jobsHtml(s) {
  if (s.jobs.length === 0) return '';
  /** @type {Map<string, string>} */
  const workerOf = new Map(s.workers.filter((w) => w.slurmJob).map((w) => [w.slurmJob, w.name]));
  return (
    '<h3>Slurm jobs</h3><table id="jobs"><tr><th>job</th><th>state</th><th>reason</th><th>node</th><th>worker</th><th>since</th></tr>' +
    s.jobs
      .map(
        (j) =>
          `<tr class="job-${esc(j.state.toLowerCase())}"><td>${esc(j.jobId)}</td><td>${esc(j.state)}</td><td>${esc(j.reason === 'None' ? '' : j.reason)}</td><td>${esc(j.node)}</td><td>${esc(workerOf.get(j.jobId) || '')}</td><td>${esc(new Date(j.time).toLocaleTimeString())}</td></tr>`,
      )
      .join('') +
    '</table>'
  );
}

// Children of `ferry run` that exited unexpectedly: each crash, restart and crash loop.
/** @param {readonly import('../src/state.js').ProcessView[]} ps */
function processesHtml(ps) {
  if (ps.length === 0) return '';
  /** @type {Record<string, string>} */
  const what = { crashed: 'exited unexpectedly', restarted: 'restarted', 'gave-up': 'crash loop: not restarted' };
  return (
    '<h3>Process restarts</h3><table id="process-events"><tr><th>time</th><th>process</th><th>event</th><th>exit</th><th>restarts</th><th>last log line</th></tr>' +
    ps
      .map(
        (p) =>
          `<tr class="process-${esc(p.state)}"><td>${esc(new Date(p.time).toLocaleTimeString())}</td><td>${esc(p.name)}</td><td>${esc(what[p.state] || p.state)}</td><td>${esc(p.exit)}</td>` +
          `<td class="num">${esc(String(p.restarts || ''))}</td><td title="${esc(p.log)}">${esc(p.logTail.length ? p.logTail[p.logTail.length - 1] : '')}</td></tr>`,
      )
      .join('') +
    '</table>'
  );
}

async function render() {
  try {
    if (route.page === 'sweep') await renderSweep();
    else await renderList();
  } catch (e) {
    main.innerHTML = '<p class="state-failed">' + esc(e instanceof Error ? e.message : e) + '</p>';
  }
}

function schedule() {
  // At most two re-renders a second, whatever the event rate (1,000 cells stay responsive).
  if (sweepTimer) return;
  sweepTimer = setTimeout(
    () => {
      sweepTimer = null;
      void render();
    },
    Math.max(0, 500 - (Date.now() - lastLoad)),
  );
}

const es = new EventSource('/api/events');
es.onopen = () => {
  statusEl.textContent = 'live';
};
es.onerror = () => {
  statusEl.textContent = 'reconnecting…';
};
es.onmessage = (/** @type {MessageEvent<string>} */ m) => {
  /** @type {{ sweeps: string[], cells: string[], workers: boolean }} */
  const d = JSON.parse(m.data);
  statusEl.textContent = 'live · updated ' + new Date().toLocaleTimeString();
  if (route.page === 'list' || (route.page === 'sweep' && (d.sweeps.includes(route.id) || d.workers))) schedule();
};
window.addEventListener('hashchange', () => {
  parseRoute();
  void render();
});
parseRoute();
void render();
