import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { DatasetError } from '../errors.js';
import { ZipFormatError, ZipReader, zipLimits, type ZipLimits } from '../weights/zip.js';
import { isDir, isImageFile, listDirs, openImageFolder, stratifiedSplit } from './folder.js';
import { decodeRgb, toGray3 } from './image.js';

/** Runs `fn` over `items` with at most `limit` in flight (sharp works on libuv's thread pool). */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(runners);
  return out;
}

/** Image files directly in `dir` (the raw layouts are flat), sorted. */
async function listImages(dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isFile() && isImageFile(e.name))
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export interface SplitReport {
  readonly classes: number;
  readonly train: number;
  readonly val: number;
}

/**
 * Copies class folders (`classFiles`: class -> absolute files) into DEST/train and DEST/val,
 * stratified and seeded (see stratifiedSplit). Refuses a non-empty destination.
 */
async function writeSplit(
  classFiles: ReadonlyMap<string, readonly string[]>,
  dest: string,
  valFraction: number,
  seed: number,
): Promise<SplitReport> {
  if ((await isDir(dest)) && (await readdir(dest)).length > 0)
    throw new DatasetError(`destination ${dest} is not empty; choose a new folder`);
  const classes = [...classFiles.keys()];
  const empty = classes.filter((c) => classFiles.get(c)!.length === 0);
  if (empty.length > 0) throw new DatasetError(`class folder(s) with no images: ${empty.join(', ')}`);
  const picks = stratifiedSplit(
    classes.map((c) => classFiles.get(c)!.length),
    valFraction,
    seed,
  );
  let train = 0;
  let val = 0;
  for (const [ci, c] of classes.entries()) {
    const files = classFiles.get(c)!;
    const toVal = new Set(picks[ci]!);
    for (const split of ['train', 'val']) await mkdir(path.join(dest, split, c), { recursive: true });
    await mapLimit(files, 16, async (f, i) => {
      const split = toVal.has(i) ? 'val' : 'train';
      await copyFile(f, path.join(dest, split, c, path.basename(f)));
    });
    val += toVal.size;
    train += files.length - toVal.size;
  }
  return { classes: classes.length, train, val };
}

/** `ferry data split`: SRC/<class>/* -> DEST/{train,val}/<class>/*. */
export async function splitFolder(src: string, dest: string, valFraction: number, seed: number): Promise<SplitReport> {
  if (!(await isDir(src))) throw new DatasetError(`${src} does not exist`);
  const classes = await listDirs(src);
  if (classes.length === 0) throw new DatasetError(`${src} has no class folders`);
  const map = new Map<string, string[]>();
  for (const c of classes)
    map.set(
      c,
      (await listImages(path.join(src, c))).map((f) => path.join(src, c, f)),
    );
  return writeSplit(map, dest, valFraction, seed);
}

export type ImportKind = 'hymenoptera' | 'dogs-vs-cats' | 'simpsons' | 'caltech256';
export const IMPORT_KINDS: readonly ImportKind[] = ['hymenoptera', 'dogs-vs-cats', 'simpsons', 'caltech256'];

/** Finds `name` as SRC itself or one level below (archives differ in their top folder). */
async function locate(src: string, name: string): Promise<string | undefined> {
  if (path.basename(src) === name && (await isDir(src))) return src;
  if (await isDir(path.join(src, name))) return path.join(src, name);
  for (const d of await listDirs(src).catch(() => []))
    if (await isDir(path.join(src, d, name))) return path.join(src, d, name);
  return undefined;
}

/**
 * `ferry data import`: the study's raw layouts (docs/study.md) -> ImageFolder train/val (80/20,
 * stratified, seeded, as the study's code did).
 */
export async function importDataset(
  kind: ImportKind,
  src: string,
  dest: string,
  options: { valFraction?: number; seed?: number } = {},
): Promise<SplitReport> {
  const valFraction = options.valFraction ?? 0.2;
  const seed = options.seed ?? 0;
  switch (kind) {
    case 'hymenoptera': {
      const root = (await locate(src, 'hymenoptera_data')) ?? src;
      const folder = await openImageFolder(root);
      if ((await isDir(dest)) && (await readdir(dest)).length > 0)
        throw new DatasetError(`destination ${dest} is not empty`);
      for (const [split, samples] of [
        ['train', folder.train],
        ['val', folder.val],
      ] as const) {
        for (const c of folder.classes) await mkdir(path.join(dest, split, c), { recursive: true });
        await mapLimit(samples, 16, (s) =>
          copyFile(s.file, path.join(dest, split, folder.classes[s.label]!, path.basename(s.file))),
        );
      }
      return { classes: folder.classes.length, train: folder.train.length, val: folder.val.length };
    }
    case 'dogs-vs-cats': {
      const train = (await locate(src, 'train')) ?? src;
      const files = await listImages(train);
      const map = new Map<string, string[]>();
      for (const f of files) {
        const m = /^(cat|dog)\./i.exec(f);
        if (!m) continue;
        const c = m[1]!.toLowerCase();
        map.set(c, [...(map.get(c) ?? []), path.join(train, f)]);
      }
      if (map.size !== 2) throw new DatasetError(`${train}: expected files named cat.<n>.jpg and dog.<n>.jpg`);
      return writeSplit(new Map([...map].sort(([a], [b]) => (a < b ? -1 : 1))), dest, valFraction, seed);
    }
    case 'simpsons': {
      const root = await locate(src, 'simpsons_dataset');
      if (!root) throw new DatasetError(`${src}: no simpsons_dataset/<character>/ folders`);
      const counts: { c: string; files: string[] }[] = [];
      for (const c of await listDirs(root))
        counts.push({ c, files: (await listImages(path.join(root, c))).map((f) => path.join(root, c, f)) });
      // The study's subset: the 20 characters with the most images (ties by name).
      const top = counts.sort((a, b) => b.files.length - a.files.length || (a.c < b.c ? -1 : 1)).slice(0, 20);
      const map = new Map(top.sort((a, b) => (a.c < b.c ? -1 : 1)).map((t) => [t.c, t.files]));
      return writeSplit(map, dest, valFraction, seed);
    }
    case 'caltech256': {
      const root = await locate(src, '256_ObjectCategories');
      if (!root) throw new DatasetError(`${src}: no 256_ObjectCategories/<nnn.name>/ folders`);
      const map = new Map<string, string[]>();
      for (const c of await listDirs(root))
        map.set(
          c,
          (await listImages(path.join(root, c))).map((f) => path.join(root, c, f)),
        );
      return writeSplit(map, dest, valFraction, seed);
    }
  }
}

export interface DatasetStats {
  readonly root: string;
  readonly classes: readonly string[];
  /** split -> class -> image count */
  readonly counts: Readonly<Record<string, Readonly<Record<string, number>>>>;
  readonly images: number;
  readonly sizes: {
    readonly minWidth: number;
    readonly maxWidth: number;
    readonly minHeight: number;
    readonly maxHeight: number;
    readonly medianWidth: number;
    readonly medianHeight: number;
    readonly histogram: Readonly<Record<string, number>>;
  };
  readonly unreadable: readonly { readonly file: string; readonly reason: string }[];
}

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** `ferry data stats`: classes, per-split counts, size distribution, unreadable files (full decode). */
export async function datasetStats(root: string): Promise<DatasetStats> {
  if (!(await isDir(root)))
    throw new DatasetError(
      `${root}: no such folder; give a dataset folder (class folders, or train/ and val/ of class folders)`,
    );
  const hasSplits = (await isDir(path.join(root, 'train'))) || (await isDir(path.join(root, 'val')));
  const splits = hasSplits ? ['train', 'val'] : ['all'];
  const counts: Record<string, Record<string, number>> = {};
  const files: string[] = [];
  const classes = new Set<string>();
  for (const split of splits) {
    const dir = split === 'all' ? root : path.join(root, split);
    if (!(await isDir(dir))) continue;
    counts[split] = {};
    for (const c of await listDirs(dir)) {
      const imgs = await listImages(path.join(dir, c));
      counts[split]![c] = imgs.length;
      classes.add(c);
      files.push(...imgs.map((f) => path.join(dir, c, f)));
    }
  }
  const unreadable: { file: string; reason: string }[] = [];
  const widths: number[] = [];
  const heights: number[] = [];
  const histogram: Record<string, number> = {};
  await mapLimit(files, Math.max(2, os.availableParallelism()), async (file) => {
    try {
      const img = await decodeRgb(file);
      widths.push(img.width);
      heights.push(img.height);
      const short = Math.min(img.width, img.height);
      const bucket =
        short < 128 ? '<128' : short < 256 ? '128-255' : short < 512 ? '256-511' : short < 1024 ? '512-1023' : '>=1024';
      histogram[bucket] = (histogram[bucket] ?? 0) + 1;
    } catch (e) {
      unreadable.push({ file, reason: (e as Error).message.replace(/^.*cannot decode image: /, '') });
    }
  });
  unreadable.sort((a, b) => (a.file < b.file ? -1 : 1));
  return {
    root,
    classes: [...classes].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
    counts,
    images: files.length,
    sizes: {
      minWidth: widths.length ? Math.min(...widths) : 0,
      maxWidth: widths.length ? Math.max(...widths) : 0,
      minHeight: heights.length ? Math.min(...heights) : 0,
      maxHeight: heights.length ? Math.max(...heights) : 0,
      medianWidth: median(widths),
      medianHeight: median(heights),
      histogram,
    },
    unreadable,
  };
}

/** `ferry data gray`: a materialised PIL-`L` copy of a dataset (same layout, same formats). */
export async function grayCopy(
  src: string,
  dest: string,
): Promise<{ written: number; skipped: { file: string; reason: string }[] }> {
  if (!(await isDir(src))) throw new DatasetError(`${src} does not exist`);
  const jobs: { from: string; to: string }[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(path.join(dir, e.name), path.join(rel, e.name));
      else if (e.isFile() && isImageFile(e.name))
        jobs.push({ from: path.join(dir, e.name), to: path.join(dest, rel, e.name) });
    }
  };
  await walk(src, '');
  const skipped: { file: string; reason: string }[] = [];
  let written = 0;
  await mapLimit(jobs, Math.max(2, os.availableParallelism()), async ({ from, to }) => {
    try {
      const g = toGray3(await decodeRgb(from));
      const l = Buffer.alloc(g.width * g.height);
      for (let i = 0; i < l.length; i++) l[i] = g.data[i * 3]!;
      await mkdir(path.dirname(to), { recursive: true });
      const img = sharp(l, { raw: { width: g.width, height: g.height, channels: 1 } }).toColourspace('b-w');
      const ext = path.extname(to).toLowerCase();
      const out =
        ext === '.png'
          ? img.png()
          : ext === '.webp'
            ? img.webp({ lossless: true })
            : ext === '.bmp'
              ? img.png()
              : img.jpeg({ quality: 95 });
      await writeFile(to, await out.toBuffer());
      written++;
    } catch (e) {
      skipped.push({ file: from, reason: (e as Error).message.replace(/^.*cannot decode image: /, '') });
    }
  });
  return { written, skipped };
}

/**
 * Extracts a .zip (stored or deflated entries) under `dest`, refusing paths that escape it and
 * entries that inflate past `limits` (a zip bomb is a DatasetError naming the entry, not an
 * out-of-memory crash).
 */
export async function extractZip(zipFile: string, dest: string, limits: ZipLimits = zipLimits()): Promise<number> {
  try {
    const zip = new ZipReader(await readFile(zipFile), limits);
    let n = 0;
    for (const name of zip.entries.keys()) {
      if (name.endsWith('/')) continue;
      const target = path.resolve(dest, name);
      if (!target.startsWith(path.resolve(dest) + path.sep))
        throw new DatasetError(`${zipFile}: entry ${name} would be written outside ${dest}`);
      await mkdir(path.dirname(target), { recursive: true });
      await writeFile(target, zip.read(name));
      n++;
    }
    return n;
  } catch (e) {
    if (e instanceof ZipFormatError) throw new DatasetError(`${zipFile}: ${e.message}`, { cause: e });
    throw e;
  }
}
