import { strategyDefinition } from '@ferry/common';

/**
 * The study's comparison table, shared by `ferry sweep results` and the dashboard so that both
 * show the same numbers.
 */

/** What the results table needs of a finished cell. */
export interface CellOutcome {
  readonly spec: { readonly dataset: string; readonly color: string; readonly strategy: string; readonly model: string };
  readonly bestValAccuracy: number;
  readonly bestEpoch: number;
  readonly wallMs: number;
  readonly imagesPerSec: number;
}

export interface TableCell {
  readonly n: number;
  readonly mean: number;
  /** Sample standard deviation across seeds (0 for one seed). */
  readonly std: number;
  readonly bestEpochMean: number;
  readonly wallMsMean: number;
  readonly imagesPerSecMean: number;
}

export interface ResultsTable {
  /** Strategy columns, in sweep order. */
  readonly strategies: readonly string[];
  /**
   * What each strategy column means (@ferry/common's STRATEGIES), so that a reader never compares
   * two different freezes under one name.
   */
  readonly semantics: Readonly<Record<string, string>>;
  readonly rows: readonly {
    readonly dataset: string;
    readonly color: string;
    readonly model: string;
    readonly byStrategy: Readonly<Record<string, TableCell | null>>;
    /** The strategy with the best mean, or null when the gap is within seed noise (or one column). */
    readonly winner: string | null;
    /** True when the best two means differ by less than the larger std (needs 2+ seeds per column). */
    readonly withinNoise: boolean;
  }[];
}

function stats(xs: readonly number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1));
  return { mean, std };
}

/** The study's comparison: rows dataset x color (x model), columns strategies, mean +/- std over seeds. */
export function resultsTable(outcomes: readonly CellOutcome[]): ResultsTable {
  const strategies = [...new Set(outcomes.map((o) => o.spec.strategy))];
  const groups = new Map<string, CellOutcome[]>();
  for (const o of outcomes) {
    const k = JSON.stringify([o.spec.dataset, o.spec.color, o.spec.model]);
    groups.set(k, [...(groups.get(k) ?? []), o]);
  }
  const rows = [...groups].map(([k, list]) => {
    const [dataset, color, model] = JSON.parse(k) as [string, string, string];
    const byStrategy: Record<string, TableCell | null> = {};
    for (const s of strategies) {
      const xs = list.filter((o) => o.spec.strategy === s);
      if (xs.length === 0) {
        byStrategy[s] = null;
        continue;
      }
      const acc = stats(xs.map((o) => o.bestValAccuracy));
      byStrategy[s] = {
        n: xs.length,
        mean: acc.mean,
        std: acc.std,
        bestEpochMean: stats(xs.map((o) => o.bestEpoch)).mean,
        wallMsMean: stats(xs.map((o) => o.wallMs)).mean,
        imagesPerSecMean: stats(xs.map((o) => o.imagesPerSec)).mean,
      };
    }
    const ranked = strategies.filter((s) => byStrategy[s]).sort((a, b) => byStrategy[b]!.mean - byStrategy[a]!.mean);
    const [first, second] = ranked;
    let winner: string | null = ranked.length > 1 ? first! : null;
    let withinNoise = false;
    if (first && second) {
      const a = byStrategy[first]!;
      const b = byStrategy[second]!;
      if (a.n > 1 && b.n > 1 && a.mean - b.mean <= Math.max(a.std, b.std)) {
        withinNoise = true;
        winner = null;
      }
      if (a.mean === b.mean) winner = null;
    }
    return { dataset, color, model, byStrategy, winner, withinNoise };
  });
  rows.sort((a, b) => (a.dataset < b.dataset ? -1 : a.dataset > b.dataset ? 1 : a.color === 'rgb' ? -1 : 1));
  const semantics = Object.fromEntries(strategies.map((s) => [s, strategyDefinition(s)?.summary ?? 'unknown strategy']));
  return { strategies, semantics, rows };
}

const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;

function cellText(c: TableCell | null): string {
  if (!c) return '-';
  return c.n > 1 ? `${pct(c.mean)} +/- ${(c.std * 100).toFixed(1)}` : pct(c.mean);
}

export function tableMarkdown(t: ResultsTable): string {
  const multiModel = new Set(t.rows.map((r) => r.model)).size > 1;
  const head = ['dataset', 'color', ...(multiModel ? ['model'] : []), ...t.strategies, 'winner'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of t.rows) {
    const cells = t.strategies.map((s) => {
      const txt = cellText(r.byStrategy[s] ?? null);
      return r.winner === s ? `**${txt}**` : txt;
    });
    const winner = r.withinNoise ? 'within seed noise' : (r.winner ?? '-');
    lines.push(`| ${[r.dataset, r.color, ...(multiModel ? [r.model] : []), ...cells, winner].join(' | ')} |`);
  }
  lines.push('', ...t.strategies.map((s) => `- ${s}: ${t.semantics[s] ?? 'unknown strategy'}`));
  return lines.join('\n');
}

/** RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled. */
function csvField(v: string): string {
  return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

export function tableCsv(t: ResultsTable): string {
  const head = [
    'dataset',
    'color',
    'model',
    ...t.strategies.flatMap((s) => [`${s}_mean`, `${s}_std`, `${s}_n`, `${s}_best_epoch`, `${s}_wall_s`, `${s}_images_per_sec`]),
    'winner',
    'within_noise',
    ...t.strategies.map((s) => `${s}_semantics`),
  ];
  const rows = t.rows.map((r) => [
    r.dataset,
    r.color,
    r.model,
    ...t.strategies.flatMap((s) => {
      const c = r.byStrategy[s];
      return c ? [c.mean.toFixed(4), c.std.toFixed(4), String(c.n), c.bestEpochMean.toFixed(1), (c.wallMsMean / 1000).toFixed(1), c.imagesPerSecMean.toFixed(1)] : ['', '', '0', '', '', ''];
    }),
    r.winner ?? '',
    String(r.withinNoise),
    ...t.strategies.map((s) => csvField(t.semantics[s] ?? '')),
  ]);
  return [head.map(csvField), ...rows].map((r) => r.join(',')).join('\n');
}
