import { FerryError } from './errors.js';

/**
 * The one table of ferry's input limits: how much one sweep file, image, tensor or zip entry may
 * ask of a machine. Each has a default that leaves every real input alone, a CLI flag that every
 * `ferry` command accepts (before or after the command name), and the environment variable the flag
 * sets, so that child processes (`ferry run`'s coordinator and workers) and worker threads (the
 * image decode pool) apply the same value. docs/operations.md lists them, checked against this table.
 */
export interface LimitDefinition {
  readonly flag: `--${string}`;
  readonly env: `FERRY_${string}`;
  readonly default: number;
  /** What the number counts, and what it guards against. */
  readonly what: string;
}

// The defaults leave every real input alone. Images: 100 megapixels (twice a 50 MP phone photo)
// decode to 300 MB of RGB and the decode pool runs one decode per core; a 747 KB PNG declaring
// 16,000 x 16,000 would take about 1 GB, and is refused from its header. Tensors: 2^30 elements is
// 4 GiB of float32. Zips: torch.save stores entries uncompressed and dataset archives hold
// already-compressed images, so 1 GiB per deflated entry and 64 GiB in all stop a bomb long before
// memory runs out.
export const LIMITS = {
  maxSweepCells: {
    flag: '--max-sweep-cells',
    env: 'FERRY_MAX_SWEEP_CELLS',
    default: 10_000,
    what: 'cells one sweep file may expand to (checked before expansion)',
  },
  maxSweepBytes: {
    flag: '--max-sweep-bytes',
    env: 'FERRY_MAX_SWEEP_BYTES',
    default: 1 << 20,
    what: 'bytes of one sweep file (YAML aliases are bounded too)',
  },
  maxImagePixels: {
    flag: '--max-image-pixels',
    env: 'FERRY_MAX_IMAGE_PIXELS',
    default: 100_000_000,
    what: 'pixels of one image, checked from its header before it is decoded',
  },
  maxTensorElements: {
    flag: '--max-tensor-elements',
    env: 'FERRY_MAX_TENSOR_ELEMENTS',
    default: 2 ** 30,
    what: 'elements of one tensor in a `.pth`/`.safetensors`/`.npy` file, checked before allocation',
  },
  maxZipEntryBytes: {
    flag: '--max-zip-entry-bytes',
    env: 'FERRY_MAX_ZIP_ENTRY_BYTES',
    default: 2 ** 30,
    what: 'bytes one zip entry (a `.pth` archive member, a dataset archive file) may inflate to',
  },
  maxZipTotalBytes: {
    flag: '--max-zip-total-bytes',
    env: 'FERRY_MAX_ZIP_TOTAL_BYTES',
    default: 64 * 2 ** 30,
    what: 'bytes all entries of one zip archive may inflate to together',
  },
} as const satisfies Readonly<Record<string, LimitDefinition>>;

export type LimitName = keyof typeof LIMITS;
export type Limits = Readonly<Record<LimitName, number>>;

export const DEFAULT_LIMITS: Limits = Object.fromEntries(
  Object.entries(LIMITS).map(([k, d]) => [k, d.default]),
) as Limits;

/** A limit's value as written on the command line or in the environment: a positive integer. */
export function parseLimit(name: LimitName, raw: string, source: string): number {
  const v = Number(raw.replace(/_/g, ''));
  if (!Number.isSafeInteger(v) || v <= 0)
    throw new FerryError(
      'FERRY_ERR_INVALID_ARGUMENT',
      `${source} must be a positive integer (got ${JSON.stringify(raw)}); the default is ${LIMITS[name].default}`,
    );
  return v;
}

const cache = { key: '', value: DEFAULT_LIMITS };

/** The limits in force: the defaults, overridden by FERRY_MAX_* in `env` (which the CLI's flags set). */
export function limits(env: Readonly<Record<string, string | undefined>> = globalThis.process?.env ?? {}): Limits {
  const names = Object.keys(LIMITS) as LimitName[];
  const key = names.map((n) => env[LIMITS[n].env] ?? '').join('\0');
  if (key === cache.key) return cache.value;
  const value = Object.fromEntries(
    names.map((n) => {
      const raw = env[LIMITS[n].env];
      return [n, raw === undefined || raw === '' ? LIMITS[n].default : parseLimit(n, raw, LIMITS[n].env)];
    }),
  ) as Limits;
  cache.key = key;
  cache.value = value;
  return value;
}

/**
 * Takes the limit flags out of a command line (anywhere in it: `--max-image-pixels N` or
 * `--max-image-pixels=N`) and returns the rest with the environment variables they set.
 */
export function extractLimitFlags(argv: readonly string[]): { argv: string[]; env: Record<string, string> } {
  const byFlag = new Map(Object.entries(LIMITS).map(([n, d]) => [d.flag as string, n as LimitName]));
  const rest: string[] = [];
  const env: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const name = byFlag.get(flag);
    if (!name) {
      rest.push(a);
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined)
      throw new FerryError(
        'FERRY_ERR_INVALID_ARGUMENT',
        `${flag} needs a value (a positive integer; the default is ${LIMITS[name].default})`,
      );
    env[LIMITS[name].env] = String(parseLimit(name, raw, flag));
  }
  return { argv: rest, env };
}
