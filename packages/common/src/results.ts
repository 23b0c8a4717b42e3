/**
 * The study's answer: the comparison table shared by `ferry run`, `ferry sweep results` and the
 * dashboard, so all of them show the same numbers. Rows are dataset x color (x model), columns the
 * strategies; each cell holds the mean over seeds and a 95% Wilson interval on the val images
 * pooled over seeds; each row compares its best two strategies on the same images (exact McNemar
 * on the images only one of them got right, pooled over seeds; a paired t-test over seeds with 3 or
 * more), and names a winner only when the test says so. rgb and gray are compared the same way.
 */
import { mcnemarExact, pairedTTest, wilsonInterval } from './stats.js';
import { sourceCellOf } from './cell-spec.js';
import { strategyDefinition } from './strategy.js';
import type { Advice } from './advice.js';
import {
  ADVISED_STRATEGIES,
  adviceAgrees,
  adviceText,
  advisorLegend,
  matchAdvice,
  type RowAdvice,
} from './advice-table.js';

/** What the table needs of a finished cell. */
export interface CellOutcome {
  readonly spec: {
    readonly dataset: string;
    readonly color: string;
    readonly strategy: string;
    readonly model: string;
    readonly seed: number;
  };
  /**
   * The rest of the cell's specification (its hyper-parameters): cells that differ in a setting
   * are never pooled as seeds of one experiment.
   */
  readonly settings?: Readonly<Record<string, unknown>>;
  /** The cell's id: names it where another cell starts from its weights (transfer stages). */
  readonly cellId?: string;
  readonly bestValAccuracy: number;
  readonly bestEpoch: number;
  readonly wallMs: number;
  readonly imagesPerSec: number;
  /**
   * The best epoch's prediction for every val image and the labels, in val order, with the hash of
   * the val image list; absent for results that did not keep them.
   */
  readonly predictions?: CellPredictions;
}

/**
 * What the coordinator, the CLI and the dashboard read of a finished cell's result (the wire
 * message `ferry.v1.CellResult`, which this dependency-free package knows only by its shape).
 */
export interface CellResultSummary {
  readonly bestValAccuracy: number;
  readonly bestEpoch: number;
  readonly wallMs: number;
  readonly imagesPerSec: number;
  readonly classes: readonly string[];
  readonly confusion: readonly (readonly number[])[];
  readonly perClassAccuracy: readonly number[];
  /** Absent in results that did not keep them. */
  readonly predictions?: CellPredictions;
}

/** The fields of `ferry.v1.CellResult` a summary reads (the generated type satisfies it). */
export interface WireCellResult {
  readonly bestValAccuracy: number;
  readonly bestEpoch: number;
  readonly wallMs: number;
  readonly imagesPerSec: number;
  readonly classes: readonly string[];
  readonly confusion: readonly { readonly counts: readonly number[] }[];
  readonly perClassAccuracy: readonly number[];
  readonly valPredictions: readonly number[];
  readonly valLabels: readonly number[];
  readonly valSetHash: string;
}

/** A reported result as the table and the views read it; predictions only when they pair up with labels. */
export function summarizeResult(r: WireCellResult): CellResultSummary {
  const pairable = r.valLabels.length > 0 && r.valPredictions.length === r.valLabels.length && r.valSetHash !== '';
  return {
    bestValAccuracy: r.bestValAccuracy,
    bestEpoch: r.bestEpoch,
    wallMs: r.wallMs,
    imagesPerSec: r.imagesPerSec,
    classes: r.classes,
    confusion: r.confusion.map((row) => row.counts),
    perClassAccuracy: r.perClassAccuracy,
    ...(pairable
      ? { predictions: { predicted: r.valPredictions, labels: r.valLabels, valSetHash: r.valSetHash } }
      : {}),
  };
}

export interface CellPredictions {
  readonly predicted: readonly number[];
  readonly labels: readonly number[];
  readonly valSetHash: string;
}

export interface TableCell {
  readonly n: number;
  readonly mean: number;
  /** Sample standard deviation across seeds (0 for one seed). */
  readonly std: number;
  readonly bestEpochMean: number;
  readonly wallMsMean: number;
  readonly imagesPerSecMean: number;
  /** Val images classified right and classified, pooled over seeds; null without predictions. */
  readonly correct: number | null;
  readonly total: number | null;
  /** 95% Wilson interval of the pooled accuracy; null without predictions. */
  readonly ci95: readonly [number, number] | null;
}

export type ComparisonTest = 'mcnemar-exact' | 'paired-t' | 'none';

export interface Comparison {
  /** The columns compared (the row's best two by mean; rgb and gray for a colour comparison). */
  readonly a: string;
  readonly b: string;
  /** The test the verdict rests on: exact McNemar when predictions pair up, else a paired t-test over 3+ seeds. */
  readonly test: ComparisonTest;
  readonly pValue: number | null;
  /** The better of a and b when pValue < alpha, else null ("no significant difference"). */
  readonly winner: string | null;
  /** Images only a got right, and only b, pooled over the paired seeds (McNemar's b and c). */
  readonly discordant: readonly [number, number] | null;
  /** Seeds whose two cells were evaluated on the same val images. */
  readonly pairedSeeds: number;
  /** With 3 or more seeds in both columns: a paired t-test on the per-seed accuracies. */
  readonly seeds: { readonly test: 'paired-t'; readonly pValue: number; readonly n: number } | null;
  /** Why there is no test, when test is 'none'. */
  readonly reason?: string;
}

export interface ResultsRow {
  readonly dataset: string;
  readonly color: string;
  readonly model: string;
  /** The row's values of the table's `groupBy` settings (`lr: 0.01`); empty when there are none. */
  readonly group: Readonly<Record<string, unknown>>;
  readonly byStrategy: Readonly<Record<string, TableCell | null>>;
  /** The row's best two strategies compared; null with fewer than two. */
  readonly comparison: Comparison | null;
  /** comparison.winner, for readers that want only the verdict. */
  readonly winner: string | null;
  /** The verdict in words, with its p-value (verdictText), as every view shows it. */
  readonly verdict: string;
  /**
   * The advisor's prediction for this row (rows with finetune and freeze columns, when advice was
   * given), and whether it agreed with the measured finetune-against-freeze verdict (null: no test).
   */
  readonly advice?: { readonly advice: Advice; readonly text: string; readonly agrees: boolean | null };
}

export interface ColorComparison {
  readonly dataset: string;
  readonly model: string;
  readonly group: Readonly<Record<string, unknown>>;
  readonly strategy: string;
  readonly rgb: TableCell;
  readonly gray: TableCell;
  readonly comparison: Comparison;
  readonly verdict: string;
}

export interface ResultsTable {
  /** Strategy columns, in sweep order. */
  readonly strategies: readonly string[];
  /**
   * Settings besides dataset, color and model that split rows: those asked for (`by`) and every
   * hyper-parameter that differs between cells of one dataset, color, model and strategy (a sweep
   * axis such as lr), so cells of different settings are never pooled as if they were seeds.
   */
  readonly groupBy: readonly string[];
  /** What each strategy column means (STRATEGIES), so a reader never compares two different freezes under one name. */
  readonly semantics: Readonly<Record<string, string>>;
  /** The significance level: a winner is named only when p < alpha. */
  readonly alpha: number;
  readonly rows: readonly ResultsRow[];
  /** rgb against gray, per dataset, model and strategy, on the same images. */
  readonly colorComparisons: readonly ColorComparison[];
  /** Rows with advice, and of those with a verdict, how many it agreed with; null when no row has advice. */
  readonly advisor: {
    readonly rows: number;
    readonly compared: number;
    readonly agreed: number;
    /** What the advisor is, that it is a heuristic, and how often it agreed (advisorLegend). */
    readonly legend: string;
  } | null;
}

export interface ResultsOptions {
  /** Significance level (default 0.05). */
  readonly alpha?: number;
  /** Settings of the cell specification to split rows by (`lr`, `batchSize`, `seed`...). */
  readonly by?: readonly string[];
  /** The advisor's predictions (PutAdvice), matched to rows by dataset, color, model and raw weights. */
  readonly advice?: readonly RowAdvice[];
}

/** The row's own axes, and what never splits a row (where a dataset lives, where a cell may run). */
const ROW_AXES = ['dataset', 'color', 'model', 'strategy'];
const NOT_SETTINGS = new Set([...ROW_AXES, 'seed', 'path', 'valFraction', 'backends']);

/** `by`, then every setting whose value differs between cells of one dataset, color, model and strategy. */
export function groupSettings(outcomes: readonly CellOutcome[], by: readonly string[] = []): string[] {
  for (const k of by) if (ROW_AXES.includes(k)) throw new RangeError(`${k} is a row or column of the table already`);
  const seen = new Map<string, Map<string, string>>();
  const varying = new Set<string>();
  for (const o of outcomes) {
    const cell = key(o.spec.dataset, o.spec.color, o.spec.model, o.spec.strategy);
    for (const [k, v] of Object.entries(o.settings ?? {})) {
      if (NOT_SETTINGS.has(k)) continue;
      const values = seen.get(k) ?? new Map<string, string>();
      seen.set(k, values);
      const was = values.get(cell);
      if (was !== undefined && was !== JSON.stringify(v)) varying.add(k);
      values.set(cell, JSON.stringify(v));
    }
  }
  return [...new Set([...by, ...[...varying].sort()])];
}

const groupOf = (o: CellOutcome, settings: readonly string[]): Record<string, unknown> =>
  Object.fromEntries(settings.map((k) => [k, ({ ...o.spec, ...o.settings } as Record<string, unknown>)[k] ?? null]));

export const DEFAULT_ALPHA = 0.05;

function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1));
  return { mean, std };
}

function countCorrect(p: CellPredictions): number {
  let k = 0;
  for (let i = 0; i < p.labels.length; i++) if (p.predicted[i] === p.labels[i]) k++;
  return k;
}

function tableCell(xs: readonly CellOutcome[]): TableCell {
  const acc = meanStd(xs.map((o) => o.bestValAccuracy));
  const withPredictions = xs.every((o) => o.predictions && o.predictions.labels.length > 0);
  const correct = withPredictions ? xs.reduce((a, o) => a + countCorrect(o.predictions!), 0) : null;
  const total = withPredictions ? xs.reduce((a, o) => a + o.predictions!.labels.length, 0) : null;
  return {
    n: xs.length,
    mean: acc.mean,
    std: acc.std,
    bestEpochMean: meanStd(xs.map((o) => o.bestEpoch)).mean,
    wallMsMean: meanStd(xs.map((o) => o.wallMs)).mean,
    imagesPerSecMean: meanStd(xs.map((o) => o.imagesPerSec)).mean,
    correct,
    total,
    ci95: correct !== null && total !== null ? wilsonInterval(correct, total) : null,
  };
}

/**
 * Compares the cells of column a with those of column b seed by seed: McNemar's discordant counts
 * pooled over the seeds whose two cells saw the same val images, and a paired t-test on the
 * per-seed accuracies when 3 or more seeds pair up.
 */
export function compareColumns(
  a: string,
  as: readonly CellOutcome[],
  b: string,
  bs: readonly CellOutcome[],
  alpha = DEFAULT_ALPHA,
): Comparison {
  const bySeed = new Map(bs.map((o) => [o.spec.seed, o]));
  const pairs = as.flatMap((x) => {
    const y = bySeed.get(x.spec.seed);
    return y ? [[x, y] as const] : [];
  });
  const { onlyA, onlyB, pairedSeeds, reason } = discordantPairs(pairs);
  const seeds =
    pairs.length >= 3
      ? {
          test: 'paired-t' as const,
          pValue: pairedTTest(pairs.map(([x, y]) => x.bestValAccuracy - y.bestValAccuracy)).pValue,
          n: pairs.length,
        }
      : null;
  const better = (diff: number): string | null => (diff > 0 ? a : diff < 0 ? b : null);
  if (pairedSeeds > 0) {
    const pValue = mcnemarExact(onlyA, onlyB);
    return {
      a,
      b,
      test: 'mcnemar-exact',
      pValue,
      winner: pValue < alpha ? better(onlyA - onlyB) : null,
      discordant: [onlyA, onlyB],
      pairedSeeds,
      seeds,
    };
  }
  if (seeds) {
    const diff = pairs.reduce((s, [x, y]) => s + x.bestValAccuracy - y.bestValAccuracy, 0);
    return {
      a,
      b,
      test: 'paired-t',
      pValue: seeds.pValue,
      winner: seeds.pValue < alpha ? better(diff) : null,
      discordant: null,
      pairedSeeds: 0,
      seeds,
    };
  }
  return {
    a,
    b,
    test: 'none',
    pValue: null,
    winner: null,
    discordant: null,
    pairedSeeds: 0,
    seeds: null,
    reason:
      pairs.length === 0 ? 'no seed ran in both columns' : `${reason ?? 'no paired images'}, and fewer than 3 seeds`,
  };
}

/**
 * McNemar's counts over the seeds whose two cells saw the same val images: images only a got
 * right, only b; with why a seed could not be paired.
 */
function discordantPairs(pairs: readonly (readonly [CellOutcome, CellOutcome])[]): {
  onlyA: number;
  onlyB: number;
  pairedSeeds: number;
  reason: string | undefined;
} {
  let onlyA = 0;
  let onlyB = 0;
  let pairedSeeds = 0;
  let reason: string | undefined;
  for (const [x, y] of pairs) {
    const px = x.predictions;
    const py = y.predictions;
    if (!px || !py || px.labels.length === 0 || py.labels.length === 0) {
      reason = 'per-image predictions were not kept';
      continue;
    }
    if (px.valSetHash !== py.valSetHash || px.labels.length !== py.labels.length) {
      reason = 'the cells were evaluated on different val images';
      continue;
    }
    pairedSeeds++;
    for (let i = 0; i < px.labels.length; i++) {
      const ra = px.predicted[i] === px.labels[i];
      const rb = py.predicted[i] === py.labels[i];
      if (ra && !rb) onlyA++;
      else if (rb && !ra) onlyB++;
    }
  }
  return { onlyA, onlyB, pairedSeeds, reason };
}

const key = (...parts: string[]): string => JSON.stringify(parts);

/**
 * A cell of a later stage starts from `weights: cell:<id>`; the table names that source as a reader
 * knows it, "<dataset> <color> <strategy>", when the source is among the outcomes. The source's
 * seed is left out, so that the seeds of a stage whose sources have the same seeds pool into one
 * row as any seeds do; sources that differ in another setting (a pretrain stage with an lr axis)
 * are told apart by a short hash of their settings. A source not among the outcomes reads
 * "cell <id8>".
 */
function withReadableSources(outcomes: readonly CellOutcome[]): readonly CellOutcome[] {
  const byId = new Map(outcomes.flatMap((o) => (o.cellId ? [[o.cellId, o] as const] : [])));
  const base = (o: CellOutcome): string => sourceLabel(o.spec);
  const settingsKey = (o: CellOutcome): string => {
    const all = { ...o.spec, ...o.settings } as Record<string, unknown>;
    const entries = Object.entries(all).filter(([k]) => k !== 'seed');
    return JSON.stringify(entries.sort(([x], [y]) => x.localeCompare(y)));
  };
  const keysByBase = new Map<string, Set<string>>();
  const sourceOf = (o: CellOutcome): CellOutcome | undefined => {
    const w = o.settings?.['weights'];
    const id = typeof w === 'string' ? sourceCellOf(w) : null;
    return id === null ? undefined : byId.get(id);
  };
  for (const o of outcomes) {
    const src = sourceOf(o);
    if (src) keysByBase.set(base(src), (keysByBase.get(base(src)) ?? new Set()).add(settingsKey(src)));
  }
  return outcomes.map((o) => {
    const w = o.settings?.['weights'];
    const id = typeof w === 'string' ? sourceCellOf(w) : null;
    if (id === null) return o;
    const src = byId.get(id);
    let label = `cell ${id.slice(0, 8)}`;
    if (src) label = keysByBase.get(base(src))!.size > 1 ? `${base(src)} (${fnv1a(settingsKey(src))})` : base(src);
    return { ...o, settings: { ...o.settings, weights: label } };
  });
}

/** "<dataset> <color> <strategy>": a stage's source cell as tables and messages name it (no seed). */
export function sourceLabel(spec: {
  readonly dataset: string;
  readonly color: string;
  readonly strategy: string;
}): string {
  return `${spec.dataset} ${spec.color} ${spec.strategy}`;
}

/** FNV-1a, 32 bits, as 8 hex digits: a short, stable name for a settings key (not a security hash). */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/** The study's comparison: rows dataset x color (x model), columns strategies, with their tests. */
export function resultsTable(outcomes: readonly CellOutcome[], options: ResultsOptions = {}): ResultsTable {
  const alpha = options.alpha ?? DEFAULT_ALPHA;
  if (!(alpha > 0 && alpha < 1)) throw new RangeError(`alpha must be between 0 and 1 (got ${alpha})`);
  const strategies = [...new Set(outcomes.map((o) => o.spec.strategy))];
  // Advice is keyed by the raw weights (`cell:<id>`), which the display relabels.
  const rawWeights = outcomes.map((o) => o.settings?.['weights']);
  outcomes = withReadableSources(outcomes);
  const groupBy = groupSettings(outcomes, options.by);
  const groups = new Map<string, { list: CellOutcome[]; weights: Set<unknown> }>();
  outcomes.forEach((o, i) => {
    const k = key(o.spec.dataset, o.spec.color, o.spec.model, JSON.stringify(groupOf(o, groupBy)));
    const g = groups.get(k) ?? { list: [], weights: new Set<unknown>() };
    g.list.push(o);
    g.weights.add(rawWeights[i]);
    groups.set(k, g);
  });
  const rows = [...groups].map(([k, g]) => {
    const [dataset, color, model, group] = JSON.parse(k) as [string, string, string, string];
    const row = resultsRow(
      [dataset, color, model],
      JSON.parse(group) as Record<string, unknown>,
      g.list,
      strategies,
      alpha,
    );
    return options.advice?.length ? withAdvice(row, g, options.advice, alpha) : row;
  });
  rows.sort(byDatasetModelColor);
  const colorComparisons = compareColors(outcomes, groupBy, alpha);
  const semantics = Object.fromEntries(
    strategies.map((s) => [s, strategyDefinition(s)?.summary ?? 'unknown strategy']),
  );
  const advised = rows.flatMap((r) => (r.advice ? [r.advice] : []));
  const compared = advised.filter((a) => a.agrees !== null);
  const agreed = compared.filter((a) => a.agrees).length;
  const advisor = advised.length
    ? { rows: advised.length, compared: compared.length, agreed, legend: advisorLegend(agreed, compared.length) }
    : null;
  return { strategies, groupBy, semantics, alpha, rows, colorComparisons, advisor };
}

/**
 * A row with finetune and freeze columns gets the advice of its dataset, color, model and raw
 * weights, checked against the measured finetune-against-freeze verdict (the row's own comparison
 * when it is that one, else the two columns compared the same way).
 */
function withAdvice(
  row: ResultsRow,
  g: { readonly list: readonly CellOutcome[]; readonly weights: ReadonlySet<unknown> },
  advice: readonly RowAdvice[],
  alpha: number,
): ResultsRow {
  const [ft, fr] = ADVISED_STRATEGIES;
  if (!row.byStrategy[ft] || !row.byStrategy[fr]) return row;
  const raw = [...g.weights];
  const weights = raw.length === 1 && typeof raw[0] === 'string' ? raw[0] : undefined;
  if (weights === undefined && raw.some((w) => w !== undefined)) return row; // mixed weights: no one key
  const found = matchAdvice(advice, row, weights);
  if (!found) return row;
  const c = row.comparison;
  const column = (s: string): CellOutcome[] => g.list.filter((o) => o.spec.strategy === s);
  const versus =
    c && [c.a, c.b].includes(ft) && [c.a, c.b].includes(fr) ? c : compareColumns(ft, column(ft), fr, column(fr), alpha);
  const agrees = adviceAgrees(found.advice.winner, { tested: versus.test !== 'none', winner: versus.winner });
  return { ...row, advice: { advice: found.advice, text: adviceText(found.advice), agrees } };
}

/** One row: each strategy's cell, and its best two strategies compared. */
function resultsRow(
  [dataset, color, model]: readonly [string, string, string],
  group: Readonly<Record<string, unknown>>,
  list: readonly CellOutcome[],
  strategies: readonly string[],
  alpha: number,
): ResultsRow {
  const byStrategy: Record<string, TableCell | null> = {};
  for (const s of strategies) {
    const xs = list.filter((o) => o.spec.strategy === s);
    byStrategy[s] = xs.length === 0 ? null : tableCell(xs);
  }
  const ranked = strategies.filter((s) => byStrategy[s]).sort((x, y) => byStrategy[y]!.mean - byStrategy[x]!.mean);
  const [first, second] = ranked;
  const column = (s: string): CellOutcome[] => list.filter((o) => o.spec.strategy === s);
  const comparison = first && second ? compareColumns(first, column(first), second, column(second), alpha) : null;
  return {
    dataset,
    color,
    model,
    group,
    byStrategy,
    comparison,
    winner: comparison?.winner ?? null,
    verdict: verdictText(comparison),
  };
}

/** Rows by dataset, then model, then the group's settings (numbers in order), rgb before gray. */
function byDatasetModelColor(x: ResultsRow, y: ResultsRow): number {
  if (x.dataset !== y.dataset) return x.dataset < y.dataset ? -1 : 1;
  if (x.model !== y.model) return x.model < y.model ? -1 : 1;
  for (const k of Object.keys(x.group)) {
    const [a, b] = [x.group[k], y.group[k]];
    if (a === b) continue;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return String(a) < String(b) ? -1 : 1;
  }
  if (x.color === y.color) return 0;
  return x.color === 'rgb' ? -1 : 1;
}

/** rgb against gray for every dataset, model, strategy (and group) that ran in both. */
function compareColors(outcomes: readonly CellOutcome[], groupBy: readonly string[], alpha: number): ColorComparison[] {
  const out: ColorComparison[] = [];
  const seen = new Set<string>();
  const placeOf = (o: CellOutcome): string =>
    key(o.spec.dataset, o.spec.model, o.spec.strategy, JSON.stringify(groupOf(o, groupBy)));
  for (const o of outcomes) {
    const k = placeOf(o);
    if (seen.has(k)) continue;
    seen.add(k);
    const same = (c: string): CellOutcome[] => outcomes.filter((x) => placeOf(x) === k && x.spec.color === c);
    const rgb = same('rgb');
    const gray = same('gray');
    if (rgb.length === 0 || gray.length === 0) continue;
    const comparison = compareColumns('rgb', rgb, 'gray', gray, alpha);
    out.push({
      dataset: o.spec.dataset,
      model: o.spec.model,
      group: groupOf(o, groupBy),
      strategy: o.spec.strategy,
      rgb: tableCell(rgb),
      gray: tableCell(gray),
      comparison,
      verdict: verdictText(comparison),
    });
  }
  return out;
}

/** A p-value as a reader wants it: "p = 0.021", "p = 0.00098", and "p < 0.0001" below that. */
export function formatP(p: number): string {
  if (p < 1e-4) return 'p < 0.0001';
  return `p = ${p >= 0.001 ? p.toFixed(p >= 0.1 ? 2 : 3) : p.toPrecision(2)}`;
}

const TEST_NAMES: Readonly<Record<ComparisonTest, string>> = {
  'mcnemar-exact': 'McNemar',
  'paired-t': 'paired t over seeds',
  none: '',
};

/** "finetune (McNemar p = 0.003)", "no significant difference (McNemar p = 0.41)", or why there is no test. */
export function verdictText(c: Comparison | null): string {
  if (!c) return '-';
  if (c.test === 'none' || c.pValue === null) return `no test: ${c.reason ?? 'nothing to compare'}`;
  const seeds = c.seeds && c.test !== 'paired-t' ? `; over seeds ${formatP(c.seeds.pValue)}` : '';
  const stat = `${TEST_NAMES[c.test]} ${formatP(c.pValue)}${seeds}`;
  return c.winner ? `${c.winner} (${stat})` : `no significant difference (${stat})`;
}
