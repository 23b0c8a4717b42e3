import { cellText, type ResultsTable } from '@ferry/common';
import { chartAssets } from '@ferry/dashboard';
import type { CellResult } from '@ferry/protocol';

/**
 * results.html: the study's answer as one self-contained file (no network requests), readable
 * offline and printable: the verdict table with its intervals and p-values, the val accuracy curves
 * of each row's cells overlaid on one chart, and each cell's confusion matrix as a heat map
 * (row-normalised). The charts are the dashboard's: uPlot and the dashboard's chart module
 * (public/chart.js) are inlined with each chart's data, so the report and the dashboard draw a curve
 * the same way. The heat maps are HTML tables (no chart library), as on the dashboard.
 */

/** One finished cell as the report needs it (from its result JSON). */
export interface ReportCell {
  readonly dataset: string;
  readonly color: string;
  readonly strategy: string;
  readonly model: string;
  readonly seed: number;
  readonly bestEpoch: number;
  readonly bestValAccuracy: number;
  readonly epochs: readonly { readonly epoch: number; readonly valAccuracy: number; readonly trainLoss: number }[];
  readonly classes: readonly string[];
  readonly confusion: readonly (readonly number[])[];
  /** Its other settings (weights, hyper-parameters): what tells apart two cells of one strategy and seed. */
  readonly settings?: Readonly<Record<string, unknown>>;
}

/**
 * Each cell's legend in a row: its strategy and seed, then, for cells that share those, the
 * settings that differ among them ("freeze seed 0 weights none" beside "freeze seed 0 weights
 * pretrained"), so no two series read the same.
 */
export function legendLabels(cells: readonly ReportCell[]): Map<ReportCell, string> {
  const base = (c: ReportCell): string => `${c.strategy} seed ${c.seed}`;
  const groups = new Map<string, ReportCell[]>();
  for (const c of cells) groups.set(base(c), [...(groups.get(base(c)) ?? []), c]);
  const out = new Map<ReportCell, string>();
  for (const [name, group] of groups) {
    const keys = [...new Set(group.flatMap((c) => Object.keys(c.settings ?? {})))].filter(
      (k) => new Set(group.map((c) => JSON.stringify(c.settings?.[k]))).size > 1,
    );
    for (const c of group) out.set(c, [name, ...keys.map((k) => `${k} ${String(c.settings?.[k] ?? '-')}`)].join(' '));
  }
  return out;
}

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** One series of an epoch chart: a value per epoch, the best epoch ringed (-1: none). */
export interface EpochSeries {
  readonly label: string;
  readonly values: readonly number[];
  readonly best: number;
}

/**
 * An epoch chart's place in the page: its arguments to FerryChart.epochChart (the dashboard's chart
 * module), which FerryChart.plotAll draws when the page loads.
 */
export function chartFigure(
  chart: { title: string; yLabel: string; series: readonly EpochSeries[]; percent: boolean },
  caption: string,
): string {
  return `<figure class="chart"><div class="plot" data-chart="${esc(JSON.stringify(chart))}"></div><figcaption>${esc(caption)}</figcaption></figure>`;
}

/** A page with the chart code inlined (uPlot, its CSS, the chart module): no request leaves it. */
function page(title: string, css: string, body: string): string {
  const assets = chartAssets();
  // A script's text may not hold "</script": no chart file has it, and data lives in attributes.
  // uPlot is a classic script (its global); the chart module runs inline with the call that draws
  // every chart of the page (FerryChart is in its scope), once the page is parsed.
  const scripts = `<script>${assets.uplot}</script>\n<script type="module">${assets.chart}\nFerryChart.plotAll();</script>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${assets.css}</style>
<style>
:root { color-scheme: light dark; --fg: #111; --grid: #e4e4e4; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: var(--fg); background: #fff; }
figure { margin: .5rem 0; }
figcaption { font-size: 12px; color: #444; }
@media (prefers-color-scheme: dark) { :root { --fg: #eee; --grid: #30353b; } body { background: #111; } figcaption { color: #bbb; } }
@media print { body { margin: 0; max-width: none; } }
${css}
</style></head>
<body>
${body}
${scripts}
</body></html>
`;
}

/** `ferry train`'s curves.html: loss and accuracy per epoch (train and val), the best epoch ringed. */
export function curvesHtml(
  title: string,
  epochs: readonly { trainLoss: number; valLoss: number; trainAccuracy: number; valAccuracy: number }[],
  bestEpoch: number,
): string {
  const series = (label: string, values: number[], best: number): EpochSeries => ({ label, values, best });
  const loss = chartFigure(
    {
      title: 'loss',
      yLabel: 'loss',
      series: [
        series(
          'train',
          epochs.map((e) => e.trainLoss),
          -1,
        ),
        series(
          'val',
          epochs.map((e) => e.valLoss),
          bestEpoch,
        ),
      ],
      percent: false,
    },
    'a ring marks the best epoch',
  );
  const accuracy = chartFigure(
    {
      title: 'accuracy',
      yLabel: 'accuracy',
      series: [
        series(
          'train',
          epochs.map((e) => e.trainAccuracy),
          -1,
        ),
        series(
          'val',
          epochs.map((e) => e.valAccuracy),
          bestEpoch,
        ),
      ],
      percent: true,
    },
    'a ring marks the best epoch',
  );
  return page(title, '', `<h1>${esc(title)}</h1>\n${loss}\n${accuracy}`);
}

/** A confusion matrix as a heat map: each cell shaded by its share of the true class's images. */
export function confusionHtml(title: string, classes: readonly string[], m: readonly (readonly number[])[]): string {
  const head = `<tr><th>true \\ predicted</th>${classes.map((c) => `<th>${esc(c)}</th>`).join('')}</tr>`;
  const rows = m
    .map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0);
      const cells = row
        .map((v) => {
          const share = total ? v / total : 0;
          const bg = `rgba(0, 114, 178, ${share.toFixed(3)})`;
          return `<td class="num" style="background:${bg};color:${share > 0.55 ? '#fff' : '#000'}" title="${v} of ${total} (${(share * 100).toFixed(0)}%)">${v}</td>`;
        })
        .join('');
      return `<tr><th>${esc(classes[i] ?? String(i))}</th>${cells}</tr>`;
    })
    .join('');
  return `<figure class="confusion"><table>${head}${rows}</table><figcaption>${esc(title)} (shade: share of the true class)</figcaption></figure>`;
}

type Row = ResultsTable['rows'][number];

/** The verdict table: a row per dataset, colour (and model), a column per strategy. */
function verdictTable(t: ResultsTable, multiModel: boolean): string {
  const advised = Boolean(t.advisor);
  const head = [
    'dataset',
    'color',
    ...(multiModel ? ['model'] : []),
    ...t.strategies,
    'verdict',
    ...(advised ? ['advisor (heuristic)'] : []),
  ];
  const advice = (r: ResultsTable['rows'][number]): string =>
    advised
      ? `<td title="a heuristic: the advisor's prediction, not a measurement">${esc(r.advice?.text ?? '-')}</td>`
      : '';
  const body = t.rows
    .map((r) => {
      const tds = t.strategies
        .map((s) => `<td${r.winner === s ? ' class="winner"' : ''}>${esc(cellText(r.byStrategy[s] ?? null))}</td>`)
        .join('');
      const group = Object.entries(r.group).map(([k, v]) => `${k} ${String(v)}`);
      const where = group.length ? `${r.dataset} (${group.join(', ')})` : r.dataset;
      return `<tr><td>${esc(where)}</td><td>${esc(r.color)}</td>${multiModel ? `<td>${esc(r.model)}</td>` : ''}${tds}<td>${esc(r.verdict)}</td>${advice(r)}</tr>`;
    })
    .join('');
  return `<table class="results"><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${body}</table>`;
}

/** rgb against gray on the same images, when the sweep has both. */
function colorTable(t: ResultsTable, multiModel: boolean): string {
  if (!t.colorComparisons.length) return '';
  const rows = t.colorComparisons
    .map(
      (c) =>
        `<tr><td>${esc(c.dataset)}</td>${multiModel ? `<td>${esc(c.model)}</td>` : ''}<td>${esc(c.strategy)}</td><td${c.comparison.winner === 'rgb' ? ' class="winner"' : ''}>${esc(cellText(c.rgb))}</td><td${c.comparison.winner === 'gray' ? ' class="winner"' : ''}>${esc(cellText(c.gray))}</td><td>${esc(c.verdict)}</td></tr>`,
    )
    .join('');
  return `<h2>rgb against gray, on the same images</h2><table class="results"><tr><th>dataset</th>${multiModel ? '<th>model</th>' : ''}<th>strategy</th><th>rgb</th><th>gray</th><th>verdict</th></tr>${rows}</table>`;
}

/** A row's cells: their val curves on one chart, and their confusion matrices. */
function rowSection(r: Row, cells: readonly ReportCell[], multiModel: boolean): string {
  const mine = cells.filter((c) => c.dataset === r.dataset && c.color === r.color && c.model === r.model);
  if (mine.length === 0) return '';
  const title = `${r.dataset} ${r.color}${multiModel ? ` ${r.model}` : ''}`;
  const legend = legendLabels(mine);
  const label = (c: ReportCell): string => legend.get(c)!;
  const chart = chartFigure(
    {
      title: `${title}: val accuracy per epoch`,
      yLabel: 'val accuracy',
      series: mine.map((c) => ({ label: label(c), values: c.epochs.map((e) => e.valAccuracy), best: c.bestEpoch })),
      percent: true,
    },
    'a ring marks each best epoch',
  );
  const matrices = mine
    .filter((c) => c.confusion.length > 0)
    .map((c) =>
      confusionHtml(
        `${title} ${label(c)}: confusion at the best epoch (${(c.bestValAccuracy * 100).toFixed(1)}%)`,
        c.classes,
        c.confusion,
      ),
    )
    .join('');
  return `<section class="row"><h3>${esc(title)}</h3>${chart}<div class="matrices">${matrices}</div></section>`;
}

const RESULTS_CSS = `table.results, figure.confusion table { border-collapse: collapse; margin: .5rem 0 1rem; }
:is(.results, .confusion) :is(th, td) { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.winner { font-weight: 700; }
.matrices { display: flex; flex-wrap: wrap; gap: 1rem; }
@media (prefers-color-scheme: dark) { :is(.results, .confusion) :is(th, td) { border-color: #444; } }
@media print { section.row { break-inside: avoid; } }`;

export function resultsHtml(
  name: string,
  t: ResultsTable,
  cells: readonly ReportCell[],
  generatedAt = new Date(),
): string {
  const multiModel = new Set(t.rows.map((r) => r.model)).size > 1;
  const notes = [
    ...t.strategies.map((s) => `<li><b>${esc(s)}</b>: ${esc(t.semantics[s] ?? 'unknown strategy')}</li>`),
    `<li>[low, high]: 95% Wilson interval on the val images pooled over seeds; a verdict names a winner only when p &lt; ${t.alpha} (exact McNemar on the images only one of the two got right; a paired t-test over seeds when images cannot be paired).</li>`,
    ...(t.advisor ? [`<li>${esc(t.advisor.legend)}</li>`] : []),
  ].join('');
  const body = `<h1>${esc(name)}</h1>
<p>Best validation accuracy per cell; generated by ferry on ${esc(generatedAt.toISOString())}.</p>
${verdictTable(t, multiModel)}
${colorTable(t, multiModel)}
<ul class="notes">${notes}</ul>
<h2>Curves and confusion matrices</h2>
${t.rows.map((r) => rowSection(r, cells, multiModel)).join('')}`;
  return page(`${name}: ferry results`, RESULTS_CSS, body);
}

/** A finished cell's report fields from its spec and result (undefined when it has none). */
export function reportCell(
  spec: { dataset: string; color: string; strategy: string; model: string; seed: number; weights?: string },
  result: CellResult | undefined,
): ReportCell | undefined {
  if (!result) return undefined;
  const { dataset, color, strategy, model, seed, ...settings } = spec;
  return {
    dataset,
    color,
    strategy,
    model,
    seed,
    settings,
    bestEpoch: result.bestEpoch,
    bestValAccuracy: result.bestValAccuracy,
    epochs: result.epochs,
    classes: result.classes,
    confusion: result.confusion.map((row) => row.counts),
  };
}
