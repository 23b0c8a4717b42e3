import {
  BACKEND_NAMES,
  HYPER_PARAMETER_DEFAULTS,
  LIMITS,
  MODEL_NAMES,
  STRATEGY_HINT,
  hyperParameterProblem,
  isModelName,
  limits as limitsInForce,
  SOURCE_CELL_PREFIX,
  startsFromScratch,
  tryParseStrategy,
  type CellSpec,
  type HyperParameterName,
} from '@ferry/common';
import { LineCounter, isMap, isNode, isScalar, parseDocument, type Document } from 'yaml';
import { cellId, type Cell } from './cell-id.js';
import { SweepError } from './errors.js';
import { STAGE_PREFIX, linkStages, type StageCells, type StageSummary } from './stages.js';

export { cellId } from './cell-id.js';

export type { CellSpec } from '@ferry/common';

export type { Cell } from './cell-id.js';

export interface Sweep {
  readonly name: string;
  /** In stage order: a cell's source (weights `cell:<id>`) is always before it. */
  readonly cells: readonly Cell[];
  /** Cells expanded before include/exclude, for reporting. */
  readonly expanded: number;
  /** The stages, in order, with the ids of their cells (empty for a sweep without stages). */
  readonly stages: readonly StageSummary[];
}

/** What a sweep file's `hyper` (and a dataset's `hyper`, an override's `set`) may set. */
type Hyper = Pick<CellSpec, 'weights' | HyperParameterName | 'backends'>;

/**
 * A `hyper` as written: any hyper-parameter of the table, and weights, may be a list of values, an
 * axis like seeds (each value its own cells); backends is one list.
 */
type HyperSetting = {
  readonly [K in keyof Hyper]?: Hyper[K] | (K extends HyperParameterName | 'weights' ? readonly Hyper[K][] : never);
};

/**
 * The study's hyper-parameters (docs/study.md; the numbers are @ferry/common's HYPER_PARAMETERS);
 * a sweep file overrides any of them.
 */
export const STUDY_DEFAULTS: Hyper = { weights: 'pretrained', ...HYPER_PARAMETER_DEFAULTS, backends: [] };

/** What `hyper` may set, in the order messages list them: weights, the table's names, backends. */
const HYPER_KEYS = Object.keys(STUDY_DEFAULTS) as (keyof Hyper)[];
const AXES = ['dataset', 'color', 'strategy', 'model', 'seed'] as const;
/** A stage's name (what `weights: stage:<name>` refers to). */
const STAGE_NAME = /^[A-Za-z0-9_-]+$/;
/** What a sweep body (a sweep without stages, or one stage) may hold besides its name. */
const BODY_KEYS = ['datasets', 'colors', 'strategies', 'models', 'seeds', 'hyper', 'overrides', 'include', 'exclude'];
const TOP_KEYS = ['name', ...BODY_KEYS, 'stages'];

/** What a sweep file may be, checked before it is expanded or stored. */
export interface SweepLimits {
  /** Bytes of YAML. */
  readonly maxYamlBytes: number;
  /** Cells after expansion (before exclude). */
  readonly maxCells: number;
}

/** The sweep limits in force (`--max-sweep-bytes`, `--max-sweep-cells`). */
export function sweepLimits(): SweepLimits {
  const l = limitsInForce();
  return { maxYamlBytes: l.maxSweepBytes, maxCells: l.maxSweepCells };
}

class Checker {
  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
    readonly problems: string[] = [],
    private readonly prefix: readonly (string | number)[] = [],
  ) {}

  /** A checker for the part of the file at `prefix` (a stage): its paths are relative to it. */
  within(prefix: readonly (string | number)[]): Checker {
    return new Checker(this.doc, this.lines, this.problems, [...this.prefix, ...prefix]);
  }

  /** `line L:C path`: the key's position for a mapping entry, the item's for a list entry; for
   * something missing, the position of the nearest enclosing node. */
  where(path: readonly (string | number)[]): string {
    const label =
      path
        .map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`))
        .join('')
        .replace(/^\./, '') || '(top)';
    for (let depth = path.length; depth >= 0; depth--) {
      const range = this.range(path.slice(0, depth));
      if (range) {
        const { line, col } = this.lines.linePos(range[0]);
        return `line ${line}:${col} ${label}`;
      }
    }
    return label;
  }

  /** Where the node at `at` is in the text: a mapping entry's key, a list item; null if absent. */
  private range(at: readonly (string | number)[]): readonly [number, number, number] | null | undefined {
    const last = at[at.length - 1];
    if (typeof last !== 'string') {
      const node = this.doc.getIn(at, true);
      return isNode(node) ? node.range : undefined;
    }
    const parent = this.doc.getIn(at.slice(0, -1), true);
    const key = isMap(parent) ? parent.items.find((it) => isScalar(it.key) && it.key.value === last)?.key : undefined;
    return isNode(key) ? key.range : undefined;
  }

  fail(path: readonly (string | number)[], message: string): void {
    this.problems.push(`${this.where([...this.prefix, ...path])}: ${message}`);
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** What is wrong with one `hyper` value, or null: the table's rule for a hyper-parameter. */
function hyperProblem(k: keyof Hyper, val: unknown): string | null {
  if (k === 'backends') {
    return !Array.isArray(val) ||
      val.some((x) => typeof x !== 'string' || !(BACKEND_NAMES as readonly string[]).includes(x))
      ? `must be a list of ${BACKEND_NAMES.join(', ')} (got ${JSON.stringify(val)})`
      : null;
  }
  return k === 'weights' ? weightsProblem(val) : hyperParameterProblem(k, val);
}

/** pretrained, none, `stage:<name>` (checked against the stages once all are read) or a file under --data-root. */
function weightsProblem(val: unknown): string | null {
  if (typeof val !== 'string' || val.length === 0)
    return `must be pretrained, none, stage:<name> or a file path (got ${JSON.stringify(val)})`;
  if (val.startsWith(STAGE_PREFIX))
    return STAGE_NAME.test(val.slice(STAGE_PREFIX.length))
      ? null
      : `stage:<name> names an earlier stage of this sweep (got ${JSON.stringify(val)})`;
  if (val.startsWith(SOURCE_CELL_PREFIX))
    return `${SOURCE_CELL_PREFIX}<id> is what a cell's stage:<name> becomes; name the stage instead (got ${JSON.stringify(val)})`;
  // Workers resolve it under their --data-root: nothing outside it may be named.
  if (!['pretrained', 'none'].includes(val) && (val.startsWith('/') || val.split(/[\\/]/).includes('..')))
    return `a weights file is a path relative to --data-root, without .. (got ${JSON.stringify(val)})`;
  return null;
}

/** A list of values for a hyper-parameter (an axis): non-empty, each value valid, no repeats. */
function hyperListProblem(k: keyof Hyper, val: readonly unknown[]): string | null {
  if (k === 'backends') return null;
  if (val.length === 0) return 'a list of values must not be empty';
  for (const x of val) {
    const problem = hyperProblem(k, x);
    if (problem) return `${JSON.stringify(x)}: ${problem}`;
  }
  return new Set(val).size === val.length ? null : 'has duplicates';
}

function checkHyper(c: Checker, v: unknown, path: (string | number)[]): HyperSetting {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) {
    c.fail(path, `must be a mapping of ${HYPER_KEYS.join(', ')}`);
    return {};
  }
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v)) {
    const known = (HYPER_KEYS as string[]).includes(k);
    const list = known && k !== 'backends' && Array.isArray(val);
    const problem = !known
      ? `unknown setting; allowed: ${HYPER_KEYS.join(', ')}`
      : list
        ? hyperListProblem(k as keyof Hyper, val as unknown[])
        : hyperProblem(k as keyof Hyper, val);
    if (problem === null) out[k] = val;
    else c.fail([...path, k], problem);
  }
  return out as HyperSetting;
}

function stringList(c: Checker, v: unknown, path: string, allowed?: readonly string[]): string[] {
  if (!Array.isArray(v) || v.length === 0) {
    c.fail([path], `must be a non-empty list${allowed ? ` of ${allowed.join(', ')}` : ''}`);
    return [];
  }
  const out: string[] = [];
  v.forEach((x, i) => {
    if (typeof x !== 'string' || (allowed && !allowed.includes(x))) {
      c.fail([path, i], `${JSON.stringify(x)} is not allowed${allowed ? `; use ${allowed.join(', ')}` : ''}`);
    } else out.push(x);
  });
  if (new Set(out).size !== out.length) c.fail([path], 'has duplicates');
  return out;
}

type Axis = (typeof AXES)[number];
type Match = Partial<Record<Axis, string | number>>;
/** One cell's place on every axis. */
type Point = Record<Axis, string | number>;

function checkMatch(c: Checker, v: unknown, path: (string | number)[]): Match | undefined {
  if (!isObj(v)) {
    c.fail(path, `must be a mapping of ${AXES.join(', ')}`);
    return undefined;
  }
  for (const k of Object.keys(v))
    if (!(AXES as readonly string[]).includes(k)) c.fail([...path, k], `unknown key; allowed: ${AXES.join(', ')}`);
  return v as Match;
}

function matches(m: Match, cell: Point): boolean {
  return AXES.every((k) => m[k] === undefined || m[k] === cell[k]);
}

interface DatasetEntry {
  readonly name: string;
  readonly path: string;
  readonly valFraction: number | null;
  readonly hyper: HyperSetting;
}

/**
 * One stage of a sweep file, checked: everything its expansion needs. A sweep without `stages` is
 * one stage without a name.
 */
interface SweepPlan {
  /** The stage's name ('' in a sweep without stages). */
  readonly stage: string;
  /** Where it is in the file ([] or ['stages', i]), for messages. */
  readonly at: readonly (string | number)[];
  readonly datasets: readonly DatasetEntry[];
  readonly colors: readonly ('rgb' | 'gray')[];
  readonly strategies: readonly string[];
  readonly models: readonly string[];
  readonly seeds: readonly number[];
  readonly hyper: HyperSetting;
  readonly overrides: readonly { readonly match: Match; readonly set: HyperSetting }[];
  readonly exclude: readonly Match[];
  readonly include: readonly Match[];
}

/**
 * The file as a YAML mapping, and a Checker on its document. Whatever stops the checks from
 * starting (too large, not YAML, aliases expanding past a bound, not a mapping) throws at once.
 */
function readSweepDocument(
  text: string,
  file: string,
  maxYamlBytes: number,
): { root: Record<string, unknown>; checker: Checker } {
  const bytes = Buffer.byteLength(text);
  if (bytes > maxYamlBytes)
    throw new SweepError(
      [`the file is ${bytes} bytes; a sweep file may hold ${maxYamlBytes} (${LIMITS.maxSweepBytes.flag})`],
      file,
    );
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true });
  if (doc.errors.length > 0)
    throw new SweepError(
      doc.errors.map((e) => e.message.split('\n')[0]!),
      file,
    );
  let root: unknown;
  try {
    // yaml refuses aliases that expand past a bound (a "billion laughs" file) with a ReferenceError.
    root = doc.toJS({ maxAliasCount: 100 }) as unknown;
  } catch (e) {
    throw new SweepError([`the file expands past what a sweep file needs (${(e as Error).message})`], file);
  }
  if (!isObj(root))
    throw new SweepError(
      ['the file must be a YAML mapping (name, datasets, colors, strategies, models, seeds, hyper)'],
      file,
    );
  return { root, checker: new Checker(doc, lines) };
}

function checkName(c: Checker, v: unknown): string {
  if (typeof v === 'string' && /^[A-Za-z0-9_.-]+$/.test(v)) return v;
  c.fail(['name'], 'required: letters, digits, _ . - only');
  return '';
}

function checkDataset(c: Checker, d: Record<string, unknown>, i: number): DatasetEntry {
  for (const k of Object.keys(d))
    if (!['name', 'path', 'valFraction', 'hyper'].includes(k))
      c.fail(['datasets', i, k], 'unknown key; allowed: name, path, valFraction, hyper');
  if (typeof d['name'] !== 'string' || d['name'].length === 0) c.fail(['datasets', i, 'name'], 'required (a string)');
  if (typeof d['path'] !== 'string' || d['path'].length === 0)
    c.fail(['datasets', i, 'path'], "required: the folder relative to each worker's --data-root");
  else if (d['path'].startsWith('/') || d['path'].split('/').includes('..'))
    c.fail(['datasets', i, 'path'], 'must be relative to --data-root, without ..');
  const vf = d['valFraction'];
  if (vf !== undefined && !(typeof vf === 'number' && vf > 0 && vf < 1))
    c.fail(['datasets', i, 'valFraction'], 'must be a number between 0 and 1');
  return {
    name: String(d['name']),
    path: String(d['path']),
    valFraction: typeof vf === 'number' ? vf : null,
    hyper: checkHyper(c, d['hyper'], ['datasets', i, 'hyper']),
  };
}

function checkDatasets(c: Checker, v: unknown): DatasetEntry[] {
  const datasets: DatasetEntry[] = [];
  if (!Array.isArray(v) || v.length === 0) c.fail(['datasets'], 'must be a non-empty list of {name, path}');
  else
    v.forEach((d: unknown, i) => {
      if (!isObj(d)) c.fail(['datasets', i], 'must be a mapping {name, path, valFraction?, hyper?}');
      else datasets.push(checkDataset(c, d, i));
    });
  if (new Set(datasets.map((d) => d.name)).size !== datasets.length)
    c.fail(['datasets'], 'dataset names must be unique');
  return datasets;
}

function checkStrategies(c: Checker, v: unknown): string[] {
  const strategies = stringList(c, v ?? ['finetune', 'freeze'], 'strategies');
  (Array.isArray(v) ? (v as unknown[]) : []).forEach((x, i) => {
    if (typeof x === 'string' && !tryParseStrategy(x))
      c.fail(['strategies', i], `${JSON.stringify(x)} is not a strategy; ${STRATEGY_HINT}`);
  });
  return strategies;
}

function checkSeeds(c: Checker, v: unknown): number[] {
  const seedsRaw = v ?? [0];
  const seeds: number[] = [];
  if (!Array.isArray(seedsRaw) || seedsRaw.length === 0) c.fail(['seeds'], 'must be a non-empty list of integers');
  else
    seedsRaw.forEach((s, i) =>
      Number.isInteger(s) && (s as number) >= 0
        ? seeds.push(s as number)
        : c.fail(['seeds', i], 'must be an integer >= 0'),
    );
  return seeds;
}

function checkOverrides(c: Checker, v: unknown): SweepPlan['overrides'] {
  const overrides: { match: Match; set: HyperSetting }[] = [];
  if (v === undefined) return overrides;
  if (!Array.isArray(v)) c.fail(['overrides'], 'must be a list of {match, set}');
  else
    v.forEach((o: unknown, i) => {
      if (!isObj(o) || !isObj(o['match']) || !isObj(o['set']))
        return c.fail(['overrides', i], 'must be {match: {...}, set: {...}}');
      const m = checkMatch(c, o['match'], ['overrides', i, 'match']);
      if (m) overrides.push({ match: m, set: checkHyper(c, o['set'], ['overrides', i, 'set']) });
    });
  return overrides;
}

/** An include names one cell: every axis, each with a value the sweep allows. */
function checkInclude(c: Checker, mm: Match, i: number, datasets: readonly DatasetEntry[]): void {
  const key = 'include';
  for (const a of AXES) if (mm[a] === undefined) c.fail([key, i], `an include names every axis; missing ${a}`);
  if (typeof mm.dataset === 'string' && !datasets.some((d) => d.name === mm.dataset))
    c.fail([key, i, 'dataset'], `no dataset named ${mm.dataset}`);
  if (mm.strategy !== undefined && !(typeof mm.strategy === 'string' && tryParseStrategy(mm.strategy)))
    c.fail([key, i, 'strategy'], `${JSON.stringify(mm.strategy)} is not a strategy; ${STRATEGY_HINT}`);
  if (mm.color !== undefined && mm.color !== 'rgb' && mm.color !== 'gray')
    c.fail([key, i, 'color'], 'must be rgb or gray');
  if (mm.model !== undefined && !(typeof mm.model === 'string' && isModelName(mm.model)))
    c.fail([key, i, 'model'], `${JSON.stringify(mm.model)} is not a model; use ${MODEL_NAMES.join(', ')}`);
  if (mm.seed !== undefined && !(Number.isInteger(mm.seed) && (mm.seed as number) >= 0))
    c.fail([key, i, 'seed'], 'must be an integer >= 0');
}

function checkMatchList(
  c: Checker,
  key: 'exclude' | 'include',
  v: unknown,
  datasets: readonly DatasetEntry[],
): Match[] {
  const list: Match[] = [];
  if (v === undefined) return list;
  if (!Array.isArray(v)) c.fail([key], 'must be a list of mappings');
  else
    v.forEach((m: unknown, i) => {
      const mm = checkMatch(c, m, [key, i]);
      if (!mm) return;
      if (key === 'include') checkInclude(c, mm, i, datasets);
      list.push(mm);
    });
  return list;
}

/** A sweep body's keys (a sweep without stages, or one stage), in the file's documented order. */
function checkBody(c: Checker, root: Record<string, unknown>, stage: string, at: SweepPlan['at']): SweepPlan {
  const datasets = checkDatasets(c, root['datasets']);
  const colors = stringList(c, root['colors'] ?? ['rgb'], 'colors', ['rgb', 'gray']) as ('rgb' | 'gray')[];
  const strategies = checkStrategies(c, root['strategies']);
  const models = stringList(c, root['models'], 'models', MODEL_NAMES);
  const seeds = checkSeeds(c, root['seeds']);
  const hyper = checkHyper(c, root['hyper'], ['hyper']);
  const overrides = checkOverrides(c, root['overrides']);
  const exclude = checkMatchList(c, 'exclude', root['exclude'], datasets);
  const include = checkMatchList(c, 'include', root['include'], datasets);
  return { stage, at, datasets, colors, strategies, models, seeds, hyper, overrides, exclude, include };
}

/** Every key of the file checked; the problems stay in `c`. */
function checkSweep(c: Checker, root: Record<string, unknown>): { name: string; stages: SweepPlan[] } {
  const staged = root['stages'] !== undefined;
  const allowed = staged ? ['name', 'stages'] : TOP_KEYS.filter((k) => k !== 'stages');
  for (const k of Object.keys(root)) {
    if (allowed.includes(k)) continue;
    c.fail(
      [k],
      staged && BODY_KEYS.includes(k)
        ? `with stages, ${k} belongs in each stage`
        : `unknown key; allowed: ${TOP_KEYS.join(', ')}`,
    );
  }
  const name = checkName(c, root['name']);
  return { name, stages: staged ? checkStages(c, root['stages']) : [checkBody(c, root, '', [])] };
}

/** `stages`: a list of named sweep bodies, in the order they run in. */
function checkStages(c: Checker, v: unknown): SweepPlan[] {
  const body = `{name, ${BODY_KEYS.join(', ')}}`;
  if (!Array.isArray(v) || v.length === 0) {
    c.fail(['stages'], `must be a non-empty list of stages, each ${body}`);
    return [];
  }
  const plans: SweepPlan[] = [];
  v.forEach((st: unknown, i) => {
    if (!isObj(st)) return c.fail(['stages', i], `must be a mapping ${body}`);
    const sc = c.within(['stages', i]);
    for (const k of Object.keys(st))
      if (k !== 'name' && !BODY_KEYS.includes(k)) sc.fail([k], `unknown key; allowed: name, ${BODY_KEYS.join(', ')}`);
    const name = st['name'];
    if (typeof name !== 'string' || !STAGE_NAME.test(name)) sc.fail(['name'], 'required: letters, digits, _ - only');
    else if (plans.some((p) => p.stage === name))
      sc.fail(['name'], `stage names must be unique (${name} is used twice)`);
    plans.push(checkBody(sc, st, typeof name === 'string' ? name : '', ['stages', i]));
  });
  return plans;
}

/** Every `weights` a stage sets (in `hyper`, a dataset's `hyper`, an override's `set`), with its path. */
function weightsSettings(p: SweepPlan): { path: (string | number)[]; value: unknown }[] {
  const out: { path: (string | number)[]; value: unknown }[] = [];
  const add = (h: HyperSetting, path: (string | number)[]): void => {
    for (const value of Array.isArray(h.weights) ? h.weights : [h.weights])
      if (value !== undefined) out.push({ path: [...path, 'weights'], value });
  };
  add(p.hyper, ['hyper']);
  p.datasets.forEach((d, j) => add(d.hyper, ['datasets', j, 'hyper']));
  p.overrides.forEach((o, k) => add(o.set, ['overrides', k, 'set']));
  return out;
}

/** `weights: stage:<name>` names an earlier stage: not itself, a later one or none (so stages never form a cycle). */
function checkStageRefs(c: Checker, plans: readonly SweepPlan[]): void {
  const names = plans.map((p) => p.stage);
  plans.forEach((p, i) => {
    for (const { path, value } of weightsSettings(p)) {
      if (typeof value !== 'string' || !value.startsWith(STAGE_PREFIX)) continue;
      const ref = value.slice(STAGE_PREFIX.length);
      const where = c.within(p.at);
      const earlier = names.slice(0, i);
      if (p.stage === '') where.fail(path, `${value} names a stage, but this sweep has no stages (see docs/sweeps.md)`);
      else if (ref === p.stage)
        where.fail(path, `stage ${p.stage} cannot start from itself; earlier stages: ${earlier.join(', ') || 'none'}`);
      else if (names.indexOf(ref) > i)
        where.fail(
          path,
          `stage ${ref} comes after stage ${p.stage}; a stage starts from an earlier one: ${earlier.join(', ') || 'none'}`,
        );
      else if (!earlier.includes(ref))
        where.fail(path, `no stage named ${ref}; stages: ${names.join(', ')} (a stage starts from an earlier one)`);
    }
  });
}

/** Refuses, before expanding, a sweep that would hold more cells than `maxCells`. */
function checkCellCount(plans: readonly SweepPlan[], maxCells: number, file: string): void {
  const count = (p: SweepPlan): number =>
    p.datasets.length * p.colors.length * p.strategies.length * p.models.length * p.seeds.length + p.include.length;
  const product = plans.reduce((n, p) => n + count(p), 0);
  if (product <= maxCells) return;
  const what = plans
    .map(
      (p) =>
        `${p.stage ? `stage ${p.stage}: ` : ''}${p.datasets.length} datasets x ${p.colors.length} colors x ${p.strategies.length} strategies x ${p.models.length} models x ${p.seeds.length} seeds + ${p.include.length} includes`,
    )
    .join('; ');
  throw new SweepError(
    [
      `the sweep expands to ${product} cells (${what}); a sweep may hold ${maxCells} (${LIMITS.maxSweepCells.flag}); split it into several sweeps`,
    ],
    file,
  );
}

/**
 * A point's hyper-parameters: STUDY_DEFAULTS < `hyper` < the dataset's `hyper` < matching
 * overrides; then one set per combination of the values of those given as lists (axes).
 */
function resolveHyper(p: SweepPlan, ds: DatasetEntry, at: Point): Hyper[] {
  let h: HyperSetting = { ...STUDY_DEFAULTS, ...p.hyper, ...ds.hyper };
  for (const o of p.overrides) if (matches(o.match, at)) h = { ...h, ...o.set };
  let sets: Record<string, unknown>[] = [{}];
  for (const [k, v] of Object.entries(h)) {
    const values: unknown[] = k !== 'backends' && Array.isArray(v) ? v : [v];
    sets = sets.flatMap((s) => values.map((x) => ({ ...s, [k]: x })));
  }
  return sets as unknown as Hyper[];
}

function buildCells(p: SweepPlan, at: Point): Cell[] {
  const ds = p.datasets.find((d) => d.name === at.dataset)!;
  return resolveHyper(p, ds, at).map((hyper) =>
    buildCell({
      dataset: ds.name,
      path: ds.path,
      valFraction: ds.valFraction,
      color: at.color as 'rgb' | 'gray',
      strategy: String(at.strategy),
      model: String(at.model),
      seed: Number(at.seed),
      ...hyper,
    }),
  );
}

function buildCell(spec: CellSpec): Cell {
  // A scratch cell starts from random weights whatever the sweep names: its id says so.
  const s = startsFromScratch(spec.strategy) ? { ...spec, weights: 'none' } : spec;
  return { id: cellId(s), spec: s };
}

function tooManyCells(maxCells: number, file: string): SweepError {
  return new SweepError(
    [
      `the sweep expands to more than ${maxCells} cells with its hyper-parameter lists; a sweep may hold ${maxCells} (${LIMITS.maxSweepCells.flag}); split it into several sweeps`,
    ],
    file,
  );
}

/** datasets x colors x strategies x models x seeds less `exclude`, plus `include`; one cell per id. */
function expandCells(p: SweepPlan, maxCells: number, file: string): { cells: Cell[]; expanded: number } {
  const cells = new Map<string, Cell>();
  let expanded = 0;
  const add = (list: readonly Cell[]): void => {
    for (const cell of list) cells.set(cell.id, cell);
    if (cells.size > maxCells) throw tooManyCells(maxCells, file);
  };
  for (const d of p.datasets)
    for (const color of p.colors)
      for (const strategy of p.strategies)
        for (const model of p.models)
          for (const seed of p.seeds) {
            const at = { dataset: d.name, color, strategy, model, seed };
            const list = buildCells(p, at);
            expanded += list.length;
            if (!p.exclude.some((m) => matches(m, at))) add(list);
          }
  for (const m of p.include) add(buildCells(p, m as Point));
  return { cells: [...cells.values()], expanded };
}

/**
 * Parses and validates a sweep file and expands it into cells, stage by stage (a sweep without
 * `stages` is one): datasets x colors x strategies x models x seeds, hyper-parameters from
 * STUDY_DEFAULTS < `hyper` < per-dataset `hyper` < matching `overrides` (in order); then `exclude`
 * removes and `include` adds cells (an include names every axis). A cell whose weights are
 * `stage:<name>` starts from the one cell of that earlier stage with its model and seed: its
 * weights become `cell:<id of that cell>` (stages.ts). Every problem is reported with its line and
 * path. The cells come in stage order, so a cell's source is always before it.
 */
export function parseSweep(text: string, file = 'sweep.yaml', limits: Partial<SweepLimits> = {}): Sweep {
  const { maxYamlBytes, maxCells } = { ...sweepLimits(), ...limits };
  const { root, checker } = readSweepDocument(text, file, maxYamlBytes);
  const { name, stages } = checkSweep(checker, root);
  checkStageRefs(checker, stages);
  if (checker.problems.length > 0) throw new SweepError(checker.problems, file);
  checkCellCount(stages, maxCells, file);
  const expanded: (StageCells & { expanded: number })[] = stages.map((p) => ({
    stage: p.stage,
    ...expandCells(p, maxCells, file),
  }));
  const linked = linkStages(expanded);
  if (linked.problems.length > 0) throw new SweepError(linked.problems, file);
  if (linked.cells.length > maxCells) throw tooManyCells(maxCells, file);
  return {
    name,
    cells: linked.cells,
    expanded: expanded.reduce((n, st) => n + st.expanded, 0),
    stages: stages[0]?.stage ? linked.stages : [],
  };
}
