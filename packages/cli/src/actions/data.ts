import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  DATASET_SOURCES,
  IMPORT_KINDS,
  InvalidArgumentError,
  datasetStats,
  download,
  extractZip,
  grayCopy,
  importDataset,
  splitFolder,
  writeDemoDataset,
  writeDemoSourceDataset,
  DEMO_CLASSES,
  DEMO_SOURCE_CLASSES,
  type ImportKind,
} from '@ferry/core';
import { ProgressLine, err, formatBytes, out, table, type CliIo } from '../io.js';
import { defaultCacheDir } from '../paths.js';

export interface SplitFlags {
  readonly val: number;
  readonly seed: number;
}

export interface PullFlags {
  readonly url?: string;
  readonly sha256?: string;
  readonly cache?: string;
}

export interface DemoFlags {
  readonly source?: string;
  readonly trainPerClass: number;
  readonly valPerClass: number;
  readonly size: number;
  readonly seed: number;
}

/** `ferry data split`. */
export async function split(src: string, dest: string, o: SplitFlags, io: CliIo): Promise<number> {
  const r = await splitFolder(src, dest, o.val, o.seed);
  out(io, `${dest}: ${r.classes} classes, ${r.train} train / ${r.val} val images`);
  return 0;
}

/** `ferry data import`. */
export async function importKind(
  [kind, src, dest]: readonly [string, string, string],
  o: SplitFlags,
  io: CliIo,
): Promise<number> {
  if (!(IMPORT_KINDS as readonly string[]).includes(kind))
    throw new InvalidArgumentError(`unknown dataset kind "${kind}"; one of ${IMPORT_KINDS.join(', ')}`);
  const r = await importDataset(kind as ImportKind, src, dest, { valFraction: o.val, seed: o.seed });
  out(io, `${dest}: ${r.classes} classes, ${r.train} train / ${r.val} val images`);
  return 0;
}

/** `ferry data stats`. */
export async function stats(dir: string, json: boolean, io: CliIo): Promise<number> {
  const s = await datasetStats(dir);
  if (json) {
    out(io, JSON.stringify(s, null, 2));
    return 0;
  }
  const splits = Object.keys(s.counts);
  out(io, `${dir}: ${s.classes.length} classes, ${s.images} images, ${s.unreadable.length} unreadable`);
  out(
    io,
    table([
      ['CLASS', ...splits.map((x) => x.toUpperCase())],
      ...s.classes.map((c) => [c, ...splits.map((x) => String(s.counts[x]?.[c] ?? 0))]),
    ]),
  );
  out(
    io,
    `sizes: width ${s.sizes.minWidth}-${s.sizes.maxWidth} (median ${s.sizes.medianWidth}), height ${s.sizes.minHeight}-${s.sizes.maxHeight} (median ${s.sizes.medianHeight})`,
  );
  out(
    io,
    `shorter side: ${Object.entries(s.sizes.histogram)
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ')}`,
  );
  for (const u of s.unreadable) out(io, `unreadable: ${u.file}: ${u.reason}`);
  return 0;
}

/** `ferry data gray`. */
export async function gray(src: string, dest: string, io: CliIo): Promise<number> {
  const r = await grayCopy(src, dest);
  for (const s of r.skipped) err(io, `warning: skipped ${s.file}: ${s.reason}`);
  out(io, `${dest}: ${r.written} grayscale images, ${r.skipped.length} skipped`);
  return 0;
}

/** `ferry data pull`: the archive (pinned SHA-256, or the first download's recorded), then imported. */
export async function pull(name: string, destArg: string | undefined, o: PullFlags, io: CliIo): Promise<number> {
  const source = DATASET_SOURCES.find((d) => d.name === name);
  if (!source)
    throw new InvalidArgumentError(
      `unknown dataset "${name}"; known: ${DATASET_SOURCES.map((d) => d.name).join(', ')}`,
    );
  const cache = path.join(o.cache ?? defaultCacheDir(io), 'datasets');
  const archive = path.join(cache, source.fileName);
  const recorded = `${archive}.sha256`;
  const pinned =
    o.sha256 ?? source.sha256 ?? (existsSync(recorded) ? (await readFile(recorded, 'utf8')).trim() : undefined);
  if (!pinned)
    err(
      io,
      `warning: no pinned SHA-256 for ${name}; the digest of this download is recorded in ${recorded} and checked from now on`,
    );
  const progress = new ProgressLine(io);
  const r = await download({
    url: o.url ?? source.url,
    dest: archive,
    ...(pinned ? { sha256: pinned } : { unpinned: true }),
    onProgress: (got, total) =>
      progress.update(
        total ? got / total : 0,
        `${formatBytes(got)}${total ? ` of ${formatBytes(total)}` : ''} ${source.fileName}`,
      ),
  });
  progress.done(`${r.how}: ${r.file} (${formatBytes(r.bytes)}, sha256 ${r.sha256})`);
  if (!pinned) await writeFile(recorded, `${r.sha256}\n`);
  const dest = destArg ?? path.join('data', name);
  const extracted = path.join(cache, `${name}-extracted`);
  await rm(extracted, { recursive: true, force: true });
  await extractZip(archive, extracted);
  const s = await importDataset(source.importAs, extracted, dest);
  await rm(extracted, { recursive: true, force: true });
  out(io, `${dest}: ${s.classes} classes, ${s.train} train / ${s.val} val images`);
  return 0;
}

/** `ferry data demo`. */
export async function demo(dest: string, o: DemoFlags, io: CliIo): Promise<number> {
  const options = { trainPerClass: o.trainPerClass, valPerClass: o.valPerClass, size: o.size, seed: o.seed };
  const r = await writeDemoDataset(dest, options);
  out(io, `wrote ${r.images} images to ${dest} (train/ and val/, ${DEMO_CLASSES.length} classes)`);
  if (o.source !== undefined) {
    const s = await writeDemoSourceDataset(o.source, options);
    out(
      io,
      `wrote ${s.images} images to ${o.source} (the source domain: ${DEMO_SOURCE_CLASSES.length} classes, ${DEMO_SOURCE_CLASSES.join(', ')})`,
    );
  }
  return 0;
}
