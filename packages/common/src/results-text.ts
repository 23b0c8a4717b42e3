/**
 * The study's table as text: Markdown (the terminal, results.md) and CSV, and the cell and
 * best-epoch texts every view shows. Rendering only; the numbers are results.ts's.
 */
import type { ResultsRow, ResultsTable, TableCell } from './results.js';

const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;

/** "87.0% [79.1, 92.4]", or with several seeds "87.0% +/- 1.2 [85.0, 88.9]". */
export function cellText(c: TableCell | null): string {
  if (!c) return '-';
  const mean = c.n > 1 ? `${pct(c.mean)} +/- ${(c.std * 100).toFixed(1)}` : pct(c.mean);
  return c.ci95 ? `${mean} [${(c.ci95[0] * 100).toFixed(1)}, ${(c.ci95[1] * 100).toFixed(1)}]` : mean;
}

/** The best epoch, counted from 1: one seed's as a whole number ("8"), a mean over seeds to a tenth ("8.3"). */
export function bestEpochText(c: TableCell): string {
  return c.n > 1 ? (c.bestEpochMean + 1).toFixed(1) : String(Math.round(c.bestEpochMean + 1));
}

export function tableMarkdown(t: ResultsTable): string {
  const multiModel = new Set(t.rows.map((r) => r.model)).size > 1;
  const advised = t.advisor !== null && t.advisor !== undefined;
  const head = [
    'dataset',
    'color',
    ...(multiModel ? ['model'] : []),
    ...t.groupBy,
    ...t.strategies,
    'verdict',
    ...(advised ? ['advisor (heuristic)'] : []),
  ];
  const groupCells = (g: Readonly<Record<string, unknown>>): string[] => t.groupBy.map((k) => String(g[k] ?? ''));
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of t.rows) {
    const cells = t.strategies.map((s) => {
      const txt = cellText(r.byStrategy[s] ?? null);
      return r.winner === s ? `**${txt}**` : txt;
    });
    lines.push(
      `| ${[r.dataset, r.color, ...(multiModel ? [r.model] : []), ...groupCells(r.group), ...cells, r.verdict, ...(advised ? [r.advice?.text ?? '-'] : [])].join(' | ')} |`,
    );
  }
  if (t.colorComparisons.length > 0) {
    lines.push('', 'rgb against gray, on the same images:', '');
    const chead = ['dataset', ...(multiModel ? ['model'] : []), ...t.groupBy, 'strategy', 'rgb', 'gray', 'verdict'];
    lines.push(`| ${chead.join(' | ')} |`, `|${chead.map(() => '---').join('|')}|`);
    for (const c of t.colorComparisons) {
      const w = c.comparison.winner;
      const rgb = w === 'rgb' ? `**${cellText(c.rgb)}**` : cellText(c.rgb);
      const gray = w === 'gray' ? `**${cellText(c.gray)}**` : cellText(c.gray);
      const place = [c.dataset, ...(multiModel ? [c.model] : []), ...groupCells(c.group)];
      lines.push(`| ${[...place, c.strategy, rgb, gray, c.verdict].join(' | ')} |`);
    }
  }
  lines.push('', ...t.strategies.map((s) => `- ${s}: ${t.semantics[s] ?? 'unknown strategy'}`));
  if (t.groupBy.includes('weights'))
    lines.push(
      '- weights: what the cells start from: none = random initialisation; pretrained = the published weights; "<dataset> <color> <strategy>" = the best weights of that cell of an earlier stage (the seed\'s own, when the stage has the seeds)',
    );
  lines.push(
    `- [low, high]: 95% Wilson interval on the val images pooled over seeds; a verdict names a winner only when p < ${t.alpha} (exact McNemar on the images only one of the two got right; a paired t-test over seeds when images cannot be paired).`,
  );
  if (t.advisor) lines.push(`- ${t.advisor.legend}`);
  return lines.join('\n');
}

/** RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled. */
function csvField(v: string): string {
  return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

const num = (v: number | null | undefined, digits = 4): string =>
  v === null || v === undefined ? '' : v.toFixed(digits);
const pv = (v: number | null | undefined): string => (v === null || v === undefined ? '' : v.toPrecision(6));

export function tableCsv(t: ResultsTable): string {
  const head = [
    'dataset',
    'color',
    'model',
    ...t.groupBy,
    ...t.strategies.flatMap((s) => [
      `${s}_mean`,
      `${s}_std`,
      `${s}_n`,
      `${s}_ci95_low`,
      `${s}_ci95_high`,
      `${s}_best_epoch`,
      `${s}_wall_s`,
      `${s}_images_per_sec`,
    ]),
    'compared',
    'test',
    'p_value',
    'winner',
    ...t.strategies.flatMap((s) => [`${s}_rgb_vs_gray_test`, `${s}_rgb_vs_gray_p_value`, `${s}_rgb_vs_gray_winner`]),
    ...t.strategies.map((s) => `${s}_semantics`),
    ...(t.advisor ? ADVISOR_CSV : []),
  ];
  const rows = t.rows.map((r) => [
    r.dataset,
    r.color,
    r.model,
    ...t.groupBy.map((k) => String(r.group[k] ?? '')),
    ...t.strategies.flatMap((s) => {
      const c = r.byStrategy[s];
      return c
        ? [
            num(c.mean),
            num(c.std),
            String(c.n),
            num(c.ci95?.[0]),
            num(c.ci95?.[1]),
            bestEpochText(c),
            (c.wallMsMean / 1000).toFixed(1),
            c.imagesPerSecMean.toFixed(1),
          ]
        : ['', '', '0', '', '', '', '', ''];
    }),
    r.comparison ? `${r.comparison.a} vs ${r.comparison.b}` : '',
    r.comparison?.test ?? '',
    pv(r.comparison?.pValue),
    r.winner ?? '',
    ...t.strategies.flatMap((s) => {
      const c = t.colorComparisons.find(
        (x) =>
          x.dataset === r.dataset &&
          x.model === r.model &&
          x.strategy === s &&
          JSON.stringify(x.group) === JSON.stringify(r.group),
      )?.comparison;
      return c ? [c.test, pv(c.pValue), c.winner ?? ''] : ['', '', ''];
    }),
    ...t.strategies.map((s) => t.semantics[s] ?? ''),
    ...(t.advisor ? advisorCsv(r) : []),
  ]);
  return [head, ...rows].map((r) => r.map(csvField).join(',')).join('\n');
}

const ADVISOR_CSV = [
  'advisor_winner',
  'advisor_margin',
  'advisor_range_low',
  'advisor_range_high',
  'advisor_agrees',
  'advisor_heuristic',
];

function advisorCsv(r: ResultsRow): string[] {
  const a = r.advice;
  if (!a) return ['', '', '', '', '', ''];
  const agrees = a.agrees === null ? '' : String(a.agrees);
  const [low, high] = a.advice.rangePoints;
  return [a.advice.winner, String(a.advice.marginPoints), String(low), String(high), agrees, 'true'];
}
