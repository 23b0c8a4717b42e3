import {
  LIMITS,
  MODEL_NAMES,
  STRATEGY_HINT,
  isModelName,
  limits as limitsInForce,
  strategyDefinition,
  tryParseStrategy,
} from '@ferry/common';
import { createHash } from 'node:crypto';
import { LineCounter, isMap, parseDocument, type Document } from 'yaml';
import { SweepError } from './errors.js';

/**
 * One training run as the coordinator sees it: plain data, resolved (every default applied).
 * Its id is a hash of exactly this object, so a resubmitted or resumed sweep maps onto the same
 * cells. The worker turns it into the engine's CellConfig (paths relative to its --data-root).
 */
export interface CellSpec {
  readonly dataset: string;
  /** Dataset folder relative to each worker's data root. */
  readonly path: string;
  readonly valFraction: number | null;
  readonly color: 'rgb' | 'gray';
  readonly strategy: string;
  readonly model: string;
  readonly seed: number;
  /** `pretrained`, `none`, or a weights file path relative to the data root. */
  readonly weights: string;
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly lrStepEpochs: number;
  readonly lrGamma: number;
  readonly imageSize: number;
  readonly featureCache: boolean;
  readonly augmentViews: number;
  /** Images per forward/backward chunk (0: automatic for the worker's backend). */
  readonly microBatch: number;
  /** Data-parallel group size (1: one worker). */
  readonly workers: number;
  /** Backends allowed to run the cell (assignment by capability); empty: any. */
  readonly backends: readonly string[];
}

export interface Cell {
  readonly id: string;
  readonly spec: CellSpec;
}

export interface Sweep {
  readonly name: string;
  readonly cells: readonly Cell[];
  /** Cells expanded before include/exclude, for reporting. */
  readonly expanded: number;
}

type Hyper = Pick<
  CellSpec,
  | 'weights'
  | 'epochs'
  | 'batchSize'
  | 'lr'
  | 'momentum'
  | 'weightDecay'
  | 'lrStepEpochs'
  | 'lrGamma'
  | 'imageSize'
  | 'featureCache'
  | 'augmentViews'
  | 'microBatch'
  | 'workers'
  | 'backends'
>;

/** The study's hyper-parameters (REFERENCE.md); a sweep file overrides any of them. */
export const STUDY_DEFAULTS: Hyper = {
  weights: 'pretrained',
  epochs: 15,
  batchSize: 32,
  lr: 0.001,
  momentum: 0.9,
  weightDecay: 0,
  lrStepEpochs: 7,
  lrGamma: 0.1,
  imageSize: 224,
  featureCache: true,
  augmentViews: 1,
  microBatch: 0,
  workers: 1,
  backends: [],
};

const BACKENDS = ['tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'];

const HYPER_KEYS = Object.keys(STUDY_DEFAULTS) as (keyof Hyper)[];
const AXES = ['dataset', 'color', 'strategy', 'model', 'seed'] as const;
const TOP_KEYS = [
  'name',
  'datasets',
  'colors',
  'strategies',
  'models',
  'seeds',
  'hyper',
  'overrides',
  'include',
  'exclude',
];

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

/** Stable JSON (sorted keys) for hashing. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * A cell's id: a hash of its specification, plus the strategy's revision where its meaning has
 * changed (`freeze` now runs BatchNorm in training mode), so a result of the old meaning is never
 * taken for the new one. Revision 1 adds nothing: those ids are what they always were.
 */
export function cellId(spec: CellSpec): string {
  const revision = strategyDefinition(spec.strategy)?.revision ?? 1;
  const hashed = revision > 1 ? { ...spec, strategyRevision: revision } : spec;
  return createHash('sha256').update(canonical(hashed)).digest('hex').slice(0, 16);
}

class Checker {
  readonly problems: string[] = [];
  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  /** `line L:C path`: the key's position for a mapping entry, the item's for a list entry; for
   * something missing, the position of the nearest enclosing node. */
  where(path: readonly (string | number)[]): string {
    const label =
      path
        .map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`))
        .join('')
        .replace(/^\./, '') || '(top)';
    for (let depth = path.length; depth >= 0; depth--) {
      const at = path.slice(0, depth);
      const last = at[at.length - 1];
      let range: [number, number, number] | undefined;
      if (typeof last === 'string') {
        const parent = this.doc.getIn(at.slice(0, -1), true);
        if (isMap(parent)) {
          const pair = parent.items.find((it) => (it.key as { value?: unknown } | null)?.value === last);
          range = (pair?.key as { range?: [number, number, number] } | undefined)?.range;
        }
      } else {
        range = (this.doc.getIn(at, true) as { range?: [number, number, number] } | undefined)?.range;
      }
      if (range) {
        const { line, col } = this.lines.linePos(range[0]);
        return `line ${line}:${col} ${label}`;
      }
    }
    return label;
  }

  fail(path: readonly (string | number)[], message: string): void {
    this.problems.push(`${this.where(path)}: ${message}`);
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkHyper(c: Checker, v: unknown, path: (string | number)[]): Partial<Hyper> {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) {
    c.fail(path, `must be a mapping of ${HYPER_KEYS.join(', ')}`);
    return {};
  }
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v)) {
    const p = [...path, k];
    if (!(HYPER_KEYS as string[]).includes(k)) {
      c.fail(p, `unknown setting; allowed: ${HYPER_KEYS.join(', ')}`);
      continue;
    }
    const d = STUDY_DEFAULTS[k as keyof Hyper];
    if (Array.isArray(d)) {
      if (!Array.isArray(val) || val.some((x) => typeof x !== 'string' || !BACKENDS.includes(x))) {
        c.fail(p, `must be a list of ${BACKENDS.join(', ')} (got ${JSON.stringify(val)})`);
        continue;
      }
    } else if (typeof d === 'number') {
      const intOnly = [
        'epochs',
        'batchSize',
        'lrStepEpochs',
        'imageSize',
        'augmentViews',
        'microBatch',
        'workers',
      ].includes(k);
      if (typeof val !== 'number' || !Number.isFinite(val) || (intOnly && !Number.isInteger(val))) {
        c.fail(p, `must be ${intOnly ? 'an integer' : 'a number'} (got ${JSON.stringify(val)})`);
        continue;
      }
      const min =
        k === 'lr' ? Number.MIN_VALUE : ['epochs', 'batchSize', 'workers'].includes(k) ? 1 : k === 'imageSize' ? 16 : 0;
      if (val < min || (k === 'momentum' && val >= 1)) {
        c.fail(p, `out of range (got ${val})`);
        continue;
      }
    } else if (typeof d === 'boolean' && typeof val !== 'boolean') {
      c.fail(p, `must be true or false (got ${JSON.stringify(val)})`);
      continue;
    } else if (typeof d === 'string' && (typeof val !== 'string' || val.length === 0)) {
      c.fail(p, `must be pretrained, none or a file path (got ${JSON.stringify(val)})`);
      continue;
    } else if (
      k === 'weights' &&
      typeof val === 'string' &&
      !['pretrained', 'none'].includes(val) &&
      (val.startsWith('/') || val.split(/[\\/]/).includes('..'))
    ) {
      // Workers resolve it under their --data-root: nothing outside it may be named.
      c.fail(p, `a weights file is a path relative to --data-root, without .. (got ${JSON.stringify(val)})`);
      continue;
    }
    out[k] = val;
  }
  return out as Partial<Hyper>;
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

type Match = Partial<Record<(typeof AXES)[number], string | number>>;

function checkMatch(c: Checker, v: unknown, path: (string | number)[]): Match | undefined {
  if (!isObj(v)) {
    c.fail(path, `must be a mapping of ${AXES.join(', ')}`);
    return undefined;
  }
  for (const k of Object.keys(v))
    if (!(AXES as readonly string[]).includes(k)) c.fail([...path, k], `unknown key; allowed: ${AXES.join(', ')}`);
  return v as Match;
}

function matches(m: Match, cell: Record<(typeof AXES)[number], string | number>): boolean {
  return AXES.every((k) => m[k] === undefined || m[k] === cell[k]);
}

/**
 * Parses and validates a sweep file and expands it into cells:
 * datasets x colors x strategies x models x seeds, hyper-parameters from STUDY_DEFAULTS < `hyper` <
 * per-dataset `hyper` < matching `overrides` (in order); then `exclude` removes and `include` adds
 * cells (an include names every axis). Every problem is reported with its line and path.
 */
export function parseSweep(text: string, file = 'sweep.yaml', limits: Partial<SweepLimits> = {}): Sweep {
  const { maxYamlBytes, maxCells } = { ...sweepLimits(), ...limits };
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
  const c = new Checker(doc, lines);
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
  for (const k of Object.keys(root))
    if (!TOP_KEYS.includes(k)) c.fail([k], `unknown key; allowed: ${TOP_KEYS.join(', ')}`);
  const name =
    typeof root['name'] === 'string' && /^[A-Za-z0-9_.-]+$/.test(root['name'])
      ? root['name']
      : (c.fail(['name'], 'required: letters, digits, _ . - only'), '');
  const datasets: { name: string; path: string; valFraction: number | null; hyper: Partial<Hyper> }[] = [];
  if (!Array.isArray(root['datasets']) || root['datasets'].length === 0)
    c.fail(['datasets'], 'must be a non-empty list of {name, path}');
  else
    (root['datasets'] as unknown[]).forEach((d, i) => {
      if (!isObj(d)) return c.fail(['datasets', i], 'must be a mapping {name, path, valFraction?, hyper?}');
      for (const k of Object.keys(d))
        if (!['name', 'path', 'valFraction', 'hyper'].includes(k))
          c.fail(['datasets', i, k], 'unknown key; allowed: name, path, valFraction, hyper');
      if (typeof d['name'] !== 'string' || d['name'].length === 0)
        c.fail(['datasets', i, 'name'], 'required (a string)');
      if (typeof d['path'] !== 'string' || d['path'].length === 0)
        c.fail(['datasets', i, 'path'], "required: the folder relative to each worker's --data-root");
      else if (d['path'].startsWith('/') || d['path'].split('/').includes('..'))
        c.fail(['datasets', i, 'path'], 'must be relative to --data-root, without ..');
      const vf = d['valFraction'];
      if (vf !== undefined && !(typeof vf === 'number' && vf > 0 && vf < 1))
        c.fail(['datasets', i, 'valFraction'], 'must be a number between 0 and 1');
      datasets.push({
        name: String(d['name']),
        path: String(d['path']),
        valFraction: typeof vf === 'number' ? vf : null,
        hyper: checkHyper(c, d['hyper'], ['datasets', i, 'hyper']),
      });
    });
  if (new Set(datasets.map((d) => d.name)).size !== datasets.length)
    c.fail(['datasets'], 'dataset names must be unique');
  const colors = stringList(c, root['colors'] ?? ['rgb'], 'colors', ['rgb', 'gray']) as ('rgb' | 'gray')[];
  const strategies = stringList(c, root['strategies'] ?? ['finetune', 'freeze'], 'strategies');
  (Array.isArray(root['strategies']) ? (root['strategies'] as unknown[]) : []).forEach((x, i) => {
    if (typeof x === 'string' && !tryParseStrategy(x))
      c.fail(['strategies', i], `${JSON.stringify(x)} is not a strategy; ${STRATEGY_HINT}`);
  });
  const models = stringList(c, root['models'], 'models', MODEL_NAMES);
  const seedsRaw = root['seeds'] ?? [0];
  const seeds: number[] = [];
  if (!Array.isArray(seedsRaw) || seedsRaw.length === 0) c.fail(['seeds'], 'must be a non-empty list of integers');
  else
    seedsRaw.forEach((s, i) =>
      Number.isInteger(s) && (s as number) >= 0
        ? seeds.push(s as number)
        : c.fail(['seeds', i], 'must be an integer >= 0'),
    );
  const hyper = checkHyper(c, root['hyper'], ['hyper']);
  const overrides: { match: Match; set: Partial<Hyper> }[] = [];
  if (root['overrides'] !== undefined) {
    if (!Array.isArray(root['overrides'])) c.fail(['overrides'], 'must be a list of {match, set}');
    else
      (root['overrides'] as unknown[]).forEach((o, i) => {
        if (!isObj(o) || !isObj(o['match']) || !isObj(o['set']))
          return c.fail(['overrides', i], 'must be {match: {...}, set: {...}}');
        const m = checkMatch(c, o['match'], ['overrides', i, 'match']);
        if (m) overrides.push({ match: m, set: checkHyper(c, o['set'], ['overrides', i, 'set']) });
      });
  }
  const exclude: Match[] = [];
  const include: Match[] = [];
  for (const [key, list] of [
    ['exclude', exclude],
    ['include', include],
  ] as const) {
    const v = root[key];
    if (v === undefined) continue;
    if (!Array.isArray(v)) c.fail([key], 'must be a list of mappings');
    else
      v.forEach((m, i) => {
        const mm = checkMatch(c, m, [key, i]);
        if (!mm) return;
        if (key === 'include') {
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
        list.push(mm);
      });
  }
  if (c.problems.length > 0) throw new SweepError(c.problems, file);

  const build = (axes: Record<(typeof AXES)[number], string | number>): Cell => {
    const ds = datasets.find((d) => d.name === axes.dataset)!;
    let h: Hyper = { ...STUDY_DEFAULTS, ...hyper, ...ds.hyper };
    for (const o of overrides) if (matches(o.match, axes)) h = { ...h, ...o.set };
    const spec: CellSpec = {
      dataset: ds.name,
      path: ds.path,
      valFraction: ds.valFraction,
      color: axes.color as 'rgb' | 'gray',
      strategy: String(axes.strategy),
      model: String(axes.model),
      seed: Number(axes.seed),
      ...h,
    };
    return { id: cellId(spec), spec };
  };
  const product = datasets.length * colors.length * strategies.length * models.length * seeds.length + include.length;
  if (product > maxCells) {
    throw new SweepError(
      [
        `the sweep expands to ${product} cells (${datasets.length} datasets x ${colors.length} colors x ${strategies.length} strategies x ${models.length} models x ${seeds.length} seeds + ${include.length} includes); a sweep may hold ${maxCells} (${LIMITS.maxSweepCells.flag}); split it into several sweeps`,
      ],
      file,
    );
  }
  const cells = new Map<string, Cell>();
  let expanded = 0;
  for (const d of datasets)
    for (const color of colors)
      for (const strategy of strategies)
        for (const model of models)
          for (const seed of seeds) {
            expanded++;
            const axes = { dataset: d.name, color, strategy, model, seed };
            if (exclude.some((m) => matches(m, axes))) continue;
            const cell = build(axes);
            cells.set(cell.id, cell);
          }
  for (const m of include) {
    const cell = build(m as Record<(typeof AXES)[number], string | number>);
    cells.set(cell.id, cell);
  }
  return { name, cells: [...cells.values()], expanded };
}
