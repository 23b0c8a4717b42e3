import { FerryError } from './errors.js';

/**
 * The cell specification, defined once: what one training run is (`CellSpec`) and the table of its
 * hyper-parameters (`HYPER_PARAMETERS`), each with its default, kind, range, one-line description
 * and `ferry train` flag. The coordinator's sweep defaults and validation, the engine's
 * `DEFAULT_CELL` and the CLI's flags derive from the table instead of repeating the numbers.
 */

/** What a hyper-parameter's value is: a whole number, any finite number, or true/false. */
export type HyperParameterKind = 'integer' | 'number' | 'boolean';

export interface HyperParameterDefinition {
  readonly kind: HyperParameterKind;
  /** The study's value (docs/study.md), used when a sweep file or a flag does not set one. */
  readonly default: number | boolean;
  /** Numbers: the smallest value allowed (inclusive, unless `minExclusive`). */
  readonly min?: number;
  /** Numbers: `min` itself is not allowed (a learning rate must be above 0). */
  readonly minExclusive?: boolean;
  /** Numbers: values must stay below this (exclusive). */
  readonly below?: number;
  /**
   * `ferry train`'s flag for it, where it has one. For a boolean, the flag that sets the opposite
   * of the default (`--no-cache` turns the feature cache off).
   */
  readonly flag?: `--${string}`;
  /** `training`: a setting of the run itself (the engine's CellConfig); `cluster`: of its placement. */
  readonly scope: 'training' | 'cluster';
  /** One line for help texts and docs. */
  readonly what: string;
  /** Booleans: what `flag` (the opposite of the default) does, for its help line. */
  readonly flagWhat?: string;
}

/**
 * The hyper-parameters of a cell, by name (the name a sweep file's `hyper` uses and a CellSpec
 * field). Every one may be set per sweep, per dataset and per override.
 */
export const HYPER_PARAMETERS = {
  epochs: {
    kind: 'integer',
    default: 15,
    min: 1,
    flag: '--epochs',
    scope: 'training',
    what: 'passes over the training images',
  },
  batchSize: {
    kind: 'integer',
    default: 32,
    min: 1,
    flag: '--batch',
    scope: 'training',
    what: 'images per SGD step',
  },
  lr: {
    kind: 'number',
    default: 0.001,
    min: 0,
    minExclusive: true,
    flag: '--lr',
    scope: 'training',
    what: 'initial learning rate',
  },
  momentum: {
    kind: 'number',
    default: 0.9,
    min: 0,
    below: 1,
    flag: '--momentum',
    scope: 'training',
    what: 'SGD momentum (torch semantics)',
  },
  weightDecay: {
    kind: 'number',
    default: 0,
    min: 0,
    flag: '--wd',
    scope: 'training',
    what: 'SGD weight decay (L2)',
  },
  lrStepEpochs: {
    kind: 'integer',
    default: 7,
    min: 0,
    flag: '--lr-step',
    scope: 'training',
    what: 'StepLR period in epochs (0: constant learning rate)',
  },
  lrGamma: {
    kind: 'number',
    default: 0.1,
    min: 0,
    flag: '--lr-gamma',
    scope: 'training',
    what: 'StepLR factor applied to the learning rate every period',
  },
  imageSize: {
    kind: 'integer',
    default: 224,
    min: 16,
    flag: '--size',
    scope: 'training',
    what: 'crop size fed to the network, in pixels (Resize is 256/224 of it)',
  },
  featureCache: {
    kind: 'boolean',
    default: true,
    flag: '--no-cache',
    scope: 'training',
    what: 'a frozen backbone in inference mode (probe, adapt) computes its features once',
    flagWhat:
      'no feature cache: a frozen backbone in inference mode (probe, adapt) runs on every image every epoch instead of once',
  },
  augmentViews: {
    kind: 'integer',
    default: 1,
    min: 0,
    flag: '--views',
    scope: 'training',
    what: 'augmented views cached per training image; epoch e uses view e mod K (0: no augmentation)',
  },
  microBatch: {
    kind: 'integer',
    default: 0,
    min: 0,
    flag: '--micro-batch',
    scope: 'training',
    what: "images per forward/backward chunk (0: automatic for the worker's backend)",
  },
  workers: {
    kind: 'integer',
    default: 1,
    min: 1,
    scope: 'cluster',
    what: 'data-parallel group size: workers that train the cell together',
  },
} as const satisfies Readonly<Record<string, HyperParameterDefinition>>;

export type HyperParameterName = keyof typeof HYPER_PARAMETERS;

/** The names in the table's order (the order help texts and error messages list them in). */
export const HYPER_PARAMETER_NAMES = Object.keys(HYPER_PARAMETERS) as readonly HyperParameterName[];

type ValueOf<K extends HyperParameterName> = (typeof HYPER_PARAMETERS)[K]['kind'] extends 'boolean' ? boolean : number;

/** A value for every hyper-parameter. */
export type HyperParameters = { readonly [K in HyperParameterName]: ValueOf<K> };

type TrainingName = {
  [K in HyperParameterName]: (typeof HYPER_PARAMETERS)[K]['scope'] extends 'training' ? K : never;
}[HyperParameterName];

/** The hyper-parameters of the training run itself (what the engine's CellConfig takes). */
export type TrainingHyperParameters = Pick<HyperParameters, TrainingName>;

function defaultsWhere(keep: (d: HyperParameterDefinition) => boolean): Record<string, number | boolean> {
  const entries: [string, HyperParameterDefinition][] = Object.entries(HYPER_PARAMETERS);
  return Object.fromEntries(entries.filter(([, d]) => keep(d)).map(([name, d]) => [name, d.default]));
}

/** Every hyper-parameter's default. */
export const HYPER_PARAMETER_DEFAULTS = defaultsWhere(() => true) as HyperParameters;

/** The training hyper-parameters' defaults (no cluster settings such as `workers`). */
export const TRAINING_DEFAULTS = defaultsWhere((d) => d.scope === 'training') as TrainingHyperParameters;

/** The training hyper-parameters' names, in the table's order. */
export const TRAINING_HYPER_PARAMETER_NAMES = HYPER_PARAMETER_NAMES.filter(
  (n): n is TrainingName => HYPER_PARAMETERS[n].scope === 'training',
);

/**
 * The training hyper-parameters of anything that holds them (a cell's spec, a sweep's resolved
 * settings), by the table's names: what the engine's configuration takes, with no list of names
 * to keep in step.
 */
export function trainingHyperParameters(from: TrainingHyperParameters): TrainingHyperParameters {
  const out: Record<string, number | boolean> = {};
  for (const name of TRAINING_HYPER_PARAMETER_NAMES) out[name] = from[name];
  return out as TrainingHyperParameters;
}

/**
 * External values of every hyper-parameter (a message, a stored row) checked against the table:
 * the values, or FERRY_ERR_INVALID_ARGUMENT with the first problem as
 * `<where>: <name> must be ...; allowed: ...`.
 */
export function parseHyperParameters(raw: Readonly<Record<string, unknown>>, where: string): HyperParameters {
  const out: Record<string, number | boolean> = {};
  for (const name of HYPER_PARAMETER_NAMES) {
    const problem = hyperParameterProblem(name, raw[name]);
    if (problem) {
      const range = hyperParameterRange(name);
      throw new FerryError(
        'FERRY_ERR_INVALID_ARGUMENT',
        `${where}: ${name} ${problem}${range ? `; allowed: ${range}` : ''}`,
      );
    }
    out[name] = raw[name] as number | boolean;
  }
  return out as HyperParameters;
}

/** The range a hyper-parameter allows, as text (`>= 1`, `> 0`, `>= 0 and < 1`); '' for a boolean. */
export function hyperParameterRange(name: HyperParameterName): string {
  const d: HyperParameterDefinition = HYPER_PARAMETERS[name];
  if (d.min === undefined) return '';
  const low = `${d.minExclusive ? '>' : '>='} ${d.min}`;
  return d.below === undefined ? low : `${low} and < ${d.below}`;
}

/**
 * What is wrong with `value` for a hyper-parameter, or null when it is allowed: `must be an
 * integer (got 1.5)`, `must be a number (got "x")`, `must be true or false (got 1)`, `out of range
 * (got 0)`.
 */
export function hyperParameterProblem(name: HyperParameterName, value: unknown): string | null {
  const d: HyperParameterDefinition = HYPER_PARAMETERS[name];
  if (d.kind === 'boolean')
    return typeof value === 'boolean' ? null : `must be true or false (got ${JSON.stringify(value)})`;
  const integer = d.kind === 'integer';
  if (typeof value !== 'number' || !Number.isFinite(value) || (integer && !Number.isInteger(value)))
    return `must be ${integer ? 'an integer' : 'a number'} (got ${JSON.stringify(value)})`;
  const min = d.min ?? -Infinity;
  const tooLow = d.minExclusive ? value <= min : value < min;
  if (tooLow || (d.below !== undefined && value >= d.below)) return `out of range (got ${value})`;
  return null;
}

/**
 * One training run as the coordinator sees it: plain data, resolved (every default applied).
 * Its id is a hash of exactly this object, so a resubmitted or resumed sweep maps onto the same
 * cells. The worker turns it into the engine's CellConfig (paths relative to its --data-root).
 */
export interface CellSpec extends HyperParameters {
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
  /** Backends allowed to run the cell (assignment by capability); empty: any. */
  readonly backends: readonly string[];
}

/**
 * A cell's specification from outside the process (a gRPC message, a stored row): every field
 * checked (the hyper-parameters against the table), never cast. Throws FERRY_ERR_INVALID_ARGUMENT
 * naming `where` and the first field that is wrong.
 */
export function parseCellSpec(raw: unknown, where: string): CellSpec {
  const bad = (what: string): never => {
    throw new FerryError('FERRY_ERR_INVALID_ARGUMENT', `${where}: ${what}`);
  };
  if (typeof raw !== 'object' || raw === null) return bad('a cell specification must be an object');
  const r = raw as Readonly<Record<string, unknown>>;
  const text = (k: string, allowEmpty = false): string => {
    const v = r[k];
    if (typeof v !== 'string' || (!allowEmpty && v === '')) return bad(`${k} must be a non-empty string`);
    return v;
  };
  const hyper = parseHyperParameters(r, where);
  const color = r['color'];
  if (color !== 'rgb' && color !== 'gray') return bad(`color must be rgb or gray (got ${JSON.stringify(color)})`);
  const vf = r['valFraction'] ?? null;
  if (vf !== null && (typeof vf !== 'number' || !(vf > 0 && vf < 1)))
    return bad(`valFraction must be a number above 0 and below 1, or absent (got ${JSON.stringify(vf)})`);
  const seed = r['seed'];
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0)
    return bad(`seed must be an integer >= 0 (got ${JSON.stringify(seed)})`);
  const backends = r['backends'] ?? [];
  if (!Array.isArray(backends) || !backends.every((b): b is string => typeof b === 'string'))
    return bad('backends must be a list of backend names');
  return {
    ...hyper,
    dataset: text('dataset'),
    path: text('path'),
    valFraction: vf,
    color,
    strategy: text('strategy'),
    model: text('model'),
    seed,
    weights: text('weights'),
    backends,
  };
}

/**
 * What a dependant cell's `weights` says: `cell:<id>`, the best-val weights of the cell of that id
 * (a sweep's `weights: stage:<name>`, resolved to the one cell of that stage it starts from). The
 * source's id is in the dependant's specification, so it is in the dependant's id too.
 */
export const SOURCE_CELL_PREFIX = 'cell:';

/** The source cell a `weights` value names (`cell:<id>`), or null for pretrained, none or a file. */
export function sourceCellOf(weights: string): string | null {
  return weights.startsWith(SOURCE_CELL_PREFIX) ? weights.slice(SOURCE_CELL_PREFIX.length) : null;
}

/**
 * The source a cell still waits for: its `cell:<id>` source while that is not done (an unknown
 * source too: the cell cannot start without it), or null. The coordinator's scheduler and the
 * CLI's progress and stall check read it alike.
 */
export function waitingForSource(
  cell: { readonly state: string; readonly spec?: { readonly weights: string } | undefined },
  stateOf: (id: string) => string | undefined,
): string | null {
  const id = cell.state === 'pending' && cell.spec ? sourceCellOf(cell.spec.weights) : null;
  return id !== null && stateOf(id) !== 'done' ? id : null;
}

/** "<dataset> <color> <strategy> <model> seed <seed>": a cell as messages name it. */
export function cellLabel(spec: {
  readonly dataset: string;
  readonly color: string;
  readonly strategy: string;
  readonly model: string;
  readonly seed: number;
}): string {
  return `${spec.dataset} ${spec.color} ${spec.strategy} ${spec.model} seed ${spec.seed}`;
}
