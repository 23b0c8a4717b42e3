import { cellText, type ResultsTable } from '@ferry/common';
import type { CellResult } from '@ferry/protocol';

/**
 * results.html: the study's answer as one self-contained file (no scripts, no network requests),
 * readable offline and printable: the verdict table with its intervals and p-values, the val
 * accuracy curves of each row's cells overlaid on one chart, and each cell's confusion matrix as a
 * heat map (row-normalised). Charts are inline SVG drawn here: a chart library would need its
 * script inlined and run to show anything, and the file must print as it is.
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
}

/** Okabe-Ito: distinguishable with the common colour-vision deficiencies; each series also has its own dash pattern. */
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];
const DASHES = ['', '6 3', '2 3', '8 3 2 3', '1 2', '10 4'];

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Val accuracy per epoch of several cells on one chart: axes with ticks, a legend, each best epoch marked. */
export function overlaySvg(
  title: string,
  series: readonly { label: string; values: readonly number[]; best: number }[],
): string {
  const W = 560;
  const H = 260;
  const pad = { l: 48, r: 16, t: 16, b: 40 };
  const maxEpochs = Math.max(1, ...series.map((s) => s.values.length));
  const xs = (i: number): number => pad.l + (maxEpochs === 1 ? 0 : (i / (maxEpochs - 1)) * (W - pad.l - pad.r));
  const ys = (v: number): number => pad.t + (1 - v) * (H - pad.t - pad.b);
  const yTicks = [0, 0.2, 0.4, 0.6, 0.8, 1]
    .map(
      (v) =>
        `<line x1="${pad.l}" x2="${W - pad.r}" y1="${ys(v)}" y2="${ys(v)}" stroke="#ddd"/><text x="${pad.l - 6}" y="${ys(v) + 4}" text-anchor="end">${(v * 100).toFixed(0)}%</text>`,
    )
    .join('');
  const step = Math.max(1, Math.ceil(maxEpochs / 10));
  const xTicks = Array.from({ length: maxEpochs }, (_, i) => i)
    .filter((i) => i % step === 0 || i === maxEpochs - 1)
    .map(
      (i) =>
        `<line x1="${xs(i)}" x2="${xs(i)}" y1="${H - pad.b}" y2="${H - pad.b + 4}" stroke="#555"/><text x="${xs(i)}" y="${H - pad.b + 16}" text-anchor="middle">${i + 1}</text>`,
    )
    .join('');
  const lines = series
    .map((s, k) => {
      const color = PALETTE[k % PALETTE.length]!;
      const dash = DASHES[k % DASHES.length]!;
      const pts = s.values.map((v, i) => `${xs(i).toFixed(1)},${ys(v).toFixed(1)}`).join(' ');
      const best =
        s.best >= 0 && s.best < s.values.length
          ? `<circle class="best" cx="${xs(s.best).toFixed(1)}" cy="${ys(s.values[s.best]!).toFixed(1)}" r="4" fill="${color}"><title>${esc(s.label)}: best epoch ${s.best + 1}, ${(s.values[s.best]! * 100).toFixed(1)}%</title></circle>`
          : '';
      return `<polyline class="series" fill="none" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''} points="${pts}"><title>${esc(s.label)}</title></polyline>${best}`;
    })
    .join('');
  const legend = series
    .map((s, k) => {
      const color = PALETTE[k % PALETTE.length]!;
      const dash = DASHES[k % DASHES.length]!;
      return `<span class="key"><svg width="28" height="10" aria-hidden="true"><line x1="0" x2="28" y1="5" y2="5" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/></svg>${esc(s.label)}</span>`;
    })
    .join(' ');
  return (
    `<figure class="chart"><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}" font-size="11" font-family="sans-serif">` +
    `${yTicks}${xTicks}<line x1="${pad.l}" x2="${W - pad.r}" y1="${H - pad.b}" y2="${H - pad.b}" stroke="#555"/><line x1="${pad.l}" x2="${pad.l}" y1="${pad.t}" y2="${H - pad.b}" stroke="#555"/>` +
    `<text x="${(pad.l + W - pad.r) / 2}" y="${H - 6}" text-anchor="middle">epoch</text><text x="12" y="${(pad.t + H - pad.b) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(pad.t + H - pad.b) / 2})">val accuracy</text>` +
    `${lines}</svg><figcaption>${esc(title)}<br><span class="legend">${legend}</span> (a dot marks each best epoch)</figcaption></figure>`
  );
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

export function resultsHtml(
  name: string,
  t: ResultsTable,
  cells: readonly ReportCell[],
  generatedAt = new Date(),
): string {
  const multiModel = new Set(t.rows.map((r) => r.model)).size > 1;
  const head = ['dataset', 'color', ...(multiModel ? ['model'] : []), ...t.strategies, 'verdict'];
  const body = t.rows
    .map((r) => {
      const tds = t.strategies
        .map((s) => `<td${r.winner === s ? ' class="winner"' : ''}>${esc(cellText(r.byStrategy[s] ?? null))}</td>`)
        .join('');
      return `<tr><td>${esc(r.dataset)}</td><td>${esc(r.color)}</td>${multiModel ? `<td>${esc(r.model)}</td>` : ''}${tds}<td>${esc(r.verdict)}</td></tr>`;
    })
    .join('');
  const colors = t.colorComparisons.length
    ? `<h2>rgb against gray, on the same images</h2><table class="results"><tr><th>dataset</th>${multiModel ? '<th>model</th>' : ''}<th>strategy</th><th>rgb</th><th>gray</th><th>verdict</th></tr>` +
      t.colorComparisons
        .map(
          (c) =>
            `<tr><td>${esc(c.dataset)}</td>${multiModel ? `<td>${esc(c.model)}</td>` : ''}<td>${esc(c.strategy)}</td><td${c.comparison.winner === 'rgb' ? ' class="winner"' : ''}>${esc(cellText(c.rgb))}</td><td${c.comparison.winner === 'gray' ? ' class="winner"' : ''}>${esc(cellText(c.gray))}</td><td>${esc(c.verdict)}</td></tr>`,
        )
        .join('') +
      '</table>'
    : '';
  const notes = [
    ...t.strategies.map((s) => `<li><b>${esc(s)}</b>: ${esc(t.semantics[s] ?? 'unknown strategy')}</li>`),
    `<li>[low, high]: 95% Wilson interval on the val images pooled over seeds; a verdict names a winner only when p &lt; ${t.alpha} (exact McNemar on the images only one of the two got right; a paired t-test over seeds when images cannot be paired).</li>`,
  ].join('');
  const label = (c: ReportCell): string => `${c.strategy} seed ${c.seed}`;
  const charts = t.rows
    .map((r) => {
      const mine = cells.filter((c) => c.dataset === r.dataset && c.color === r.color && c.model === r.model);
      if (mine.length === 0) return '';
      const title = `${r.dataset} ${r.color}${multiModel ? ` ${r.model}` : ''}`;
      const chart = overlaySvg(
        `${title}: val accuracy per epoch`,
        mine.map((c) => ({ label: label(c), values: c.epochs.map((e) => e.valAccuracy), best: c.bestEpoch })),
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
    })
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(name)}: ferry results</title>
<style>
:root { color-scheme: light dark; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #111; background: #fff; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.winner { font-weight: 700; }
.chart svg { width: 100%; max-width: 560px; height: auto; }
.legend .key { margin-right: .8rem; white-space: nowrap; }
.matrices { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: .5rem 0; }
figcaption { font-size: 12px; color: #444; }
@media (prefers-color-scheme: dark) { body { background: #111; color: #eee; } th, td { border-color: #444; } figcaption { color: #bbb; } svg text { fill: #ddd; } }
@media print { body { margin: 0; max-width: none; } section.row { break-inside: avoid; } }
</style></head>
<body>
<h1>${esc(name)}</h1>
<p>Best validation accuracy per cell; generated by ferry on ${esc(generatedAt.toISOString())}.</p>
<table class="results"><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${body}</table>
${colors}
<ul class="notes">${notes}</ul>
<h2>Curves and confusion matrices</h2>
${charts}
</body></html>
`;
}

/** A finished cell's report fields from its spec and result (undefined when it has none). */
export function reportCell(
  spec: { dataset: string; color: string; strategy: string; model: string; seed: number },
  result: CellResult | undefined,
): ReportCell | undefined {
  if (!result) return undefined;
  return {
    ...spec,
    bestEpoch: result.bestEpoch,
    bestValAccuracy: result.bestValAccuracy,
    epochs: result.epochs,
    classes: result.classes,
    confusion: result.confusion.map((row) => row.counts),
  };
}
