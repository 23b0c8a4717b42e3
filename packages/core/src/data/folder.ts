import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { DatasetError } from '../errors.js';
import { Rng } from '../util/rng.js';

/** Extensions ImageFolder accepts (any case). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.bmp', '.webp'];

export interface Sample {
  readonly file: string;
  readonly label: number;
  readonly bytes: number;
}

export interface ImageFolder {
  readonly root: string;
  /** Sorted like torchvision (plain code-point order of the folder names). */
  readonly classes: readonly string[];
  readonly train: readonly Sample[];
  readonly val: readonly Sample[];
  /** How the split was made: the dataset's own train/ and val/ folders, or a seeded split. */
  readonly split: 'folders' | { readonly valFraction: number; readonly seed: number };
  /**
   * Symbolic links inside class folders, not followed (a link could reach anywhere on the worker):
   * said, so a dataset of links is not silently smaller than it looks.
   */
  readonly skippedLinks: readonly string[];
}

export function isImageFile(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

/** Sub-folders of `dir` (not hidden), sorted like torchvision sorts classes. */
export async function listDirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The image files of one class folder (recursively, as torchvision does), sorted; symbolic links go to `links`. */
async function listImages(dir: string, links: string[] = []): Promise<{ file: string; bytes: number }[]> {
  const out: { file: string; bytes: number }[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = (await readdir(d, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isSymbolicLink()) links.push(p);
      else if (e.isDirectory()) await walk(p);
      else if (e.isFile() && isImageFile(e.name)) out.push({ file: p, bytes: (await stat(p)).size });
    }
  };
  await walk(dir);
  return out;
}

/** True when `p` is an existing directory. */
export async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function readClasses(
  dir: string,
  what: string,
  links: string[],
): Promise<Map<string, { file: string; bytes: number }[]>> {
  const classes = await listDirs(dir);
  if (classes.length === 0)
    throw new DatasetError(`${what} (${dir}) has no class folders; expected ${dir}/<class>/<image>`);
  const out = new Map<string, { file: string; bytes: number }[]>();
  const empty: string[] = [];
  for (const c of classes) {
    const files = await listImages(path.join(dir, c), links);
    if (files.length === 0) empty.push(c);
    out.set(c, files);
  }
  if (empty.length > 0) {
    throw new DatasetError(
      `${what}: class folder${empty.length > 1 ? 's' : ''} ${empty.map((c) => `"${c}"`).join(', ')} in ${dir} hold${empty.length > 1 ? '' : 's'} no images (${IMAGE_EXTENSIONS.join(', ')}); add images or remove the folder`,
    );
  }
  return out;
}

/**
 * Opens an ImageFolder dataset. With ROOT/train and ROOT/val, those are used; otherwise, when
 * `valFraction` is given, ROOT/<class>/* is split per class (stratified, seeded). Structural
 * problems fail here, before any training, with what to fix.
 */
/** A classifier of one class learns nothing (and its one-hot labels have depth 1): say so first. */
function needTwoClasses(root: string, classes: readonly string[]): void {
  if (classes.length < 2) {
    throw new DatasetError(
      `${root} has ${classes.length} class (${classes.join(', ')}); a classifier needs at least 2 class folders`,
    );
  }
}

export async function openImageFolder(
  root: string,
  options: { valFraction?: number; seed?: number } = {},
): Promise<ImageFolder> {
  if (!(await isDir(root))) throw new DatasetError(`dataset folder ${root} does not exist`);
  const links: string[] = [];
  const hasTrain = await isDir(path.join(root, 'train'));
  const hasVal = await isDir(path.join(root, 'val'));
  if (hasTrain && hasVal) {
    const train = await readClasses(path.join(root, 'train'), 'train split', links);
    const val = await readClasses(path.join(root, 'val'), 'val split', links);
    const tc = [...train.keys()];
    const vc = [...val.keys()];
    const onlyTrain = tc.filter((c) => !val.has(c));
    const onlyVal = vc.filter((c) => !train.has(c));
    if (onlyTrain.length > 0 || onlyVal.length > 0) {
      throw new DatasetError(
        `train and val have different classes in ${root}: ` +
          [
            onlyTrain.length > 0 ? `only in train: ${onlyTrain.join(', ')}` : '',
            onlyVal.length > 0 ? `only in val: ${onlyVal.join(', ')}` : '',
          ]
            .filter(Boolean)
            .join('; ') +
          '; every class needs images in both',
      );
    }
    const toSamples = (m: Map<string, { file: string; bytes: number }[]>): Sample[] =>
      tc.flatMap((c, label) => m.get(c)!.map((f) => ({ file: f.file, label, bytes: f.bytes })));
    needTwoClasses(root, tc);
    return { root, classes: tc, train: toSamples(train), val: toSamples(val), split: 'folders', skippedLinks: links };
  }
  if (hasTrain !== hasVal) {
    throw new DatasetError(
      `${root} has ${hasTrain ? 'train/' : 'val/'} but no ${hasTrain ? 'val/' : 'train/'}; add it, or use \`ferry data split\` on a folder of class folders`,
    );
  }
  if (options.valFraction === undefined) {
    throw new DatasetError(
      `${root} has no train/ and val/ folders; split it with \`ferry data split ${root} DEST --val 0.2\`, or pass a validation fraction`,
    );
  }
  const all = await readClasses(root, 'dataset', links);
  const seed = options.seed ?? 0;
  const split = stratifiedSplit(
    [...all.values()].map((files) => files.length),
    options.valFraction,
    seed,
  );
  const classes = [...all.keys()];
  needTwoClasses(root, classes);
  const train: Sample[] = [];
  const val: Sample[] = [];
  classes.forEach((c, label) => {
    const files = all.get(c)!;
    const valIdx = new Set(split[label]!);
    files.forEach((f, i) => (valIdx.has(i) ? val : train).push({ file: f.file, label, bytes: f.bytes }));
  });
  if (val.length === 0) throw new DatasetError(`val fraction ${options.valFraction} leaves no val images in ${root}`);
  return { root, classes, train, val, split: { valFraction: options.valFraction, seed }, skippedLinks: links };
}

/**
 * For each class of `counts[c]` items, the indices that go to val: round(fraction * n) of them
 * (at least one when n > 1), chosen by a per-class seeded shuffle. Deterministic and stratified.
 */
export function stratifiedSplit(counts: readonly number[], valFraction: number, seed: number): number[][] {
  if (!(valFraction > 0 && valFraction < 1))
    throw new DatasetError(`val fraction must be between 0 and 1 (got ${valFraction})`);
  return counts.map((n, c) => {
    let k = Math.round(valFraction * n);
    if (n > 1) k = Math.min(Math.max(k, 1), n - 1);
    else k = 0;
    const perm = Rng.fromSeed((seed ^ Math.imul(c + 1, 0x9e3779b1)) >>> 0).permutation(n);
    return perm.slice(0, k).sort((a, b) => a - b);
  });
}
