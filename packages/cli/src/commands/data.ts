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
import { Args } from '../args.js';
import { ProgressLine, err, formatBytes, out, table, type CliIo } from '../io.js';
import { defaultCacheDir } from './weights.js';

export const USAGE = `ferry data <command>
  split SRC DEST [--val 0.2] [--seed S]        class folders -> train/ and val/ (stratified, deterministic)
  stats DIR [--json]                           classes, per-split counts, image sizes, unreadable files
  import KIND SRC DEST [--val 0.2] [--seed S]  raw layouts: ${IMPORT_KINDS.join(', ')}
  pull hymenoptera [DEST] [--url URL --sha256 HEX] [--cache DIR]   download (SHA-256, cache, resumable)
  gray SRC DEST                                a materialised grayscale (PIL "L") copy
  demo DEST [--source DIR] [--train-per-class N] [--val-per-class N] [--size PX] [--seed S]   the offline demo dataset (and its 8-class source domain, for pretraining)`;

function need(args: Args, n: number, what: string): string[] {
  if (args.positionals.length < n) throw new InvalidArgumentError(`missing ${what}\nusage: ${USAGE}`);
  return args.positionals.slice(0, n);
}

/** `ferry data`: dataset tools. */
export async function dataCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'split': {
      const args = Args.parse(rest, { val: { type: 'string' }, seed: { type: 'string' } }, USAGE);
      const [src, dest] = need(args, 2, 'SRC and DEST') as [string, string];
      const r = await splitFolder(src, dest, args.number('val', 0.2), args.int('seed', 0, 0));
      out(io, `${dest}: ${r.classes} classes, ${r.train} train / ${r.val} val images`);
      return 0;
    }
    case 'import': {
      const args = Args.parse(rest, { val: { type: 'string' }, seed: { type: 'string' } }, USAGE);
      const [kind, src, dest] = need(args, 3, 'KIND, SRC and DEST') as [string, string, string];
      if (!(IMPORT_KINDS as readonly string[]).includes(kind))
        throw new InvalidArgumentError(`unknown dataset kind "${kind}"; one of ${IMPORT_KINDS.join(', ')}`);
      const r = await importDataset(kind as ImportKind, src, dest, {
        valFraction: args.number('val', 0.2),
        seed: args.int('seed', 0, 0),
      });
      out(io, `${dest}: ${r.classes} classes, ${r.train} train / ${r.val} val images`);
      return 0;
    }
    case 'stats': {
      const args = Args.parse(rest, { json: { type: 'boolean' } }, USAGE);
      const [dir] = need(args, 1, 'DIR') as [string];
      const s = await datasetStats(dir);
      if (args.flag('json')) {
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
    case 'gray': {
      const args = Args.parse(rest, {}, USAGE);
      const [src, dest] = need(args, 2, 'SRC and DEST') as [string, string];
      const r = await grayCopy(src, dest);
      for (const s of r.skipped) err(io, `warning: skipped ${s.file}: ${s.reason}`);
      out(io, `${dest}: ${r.written} grayscale images, ${r.skipped.length} skipped`);
      return 0;
    }
    case 'pull': {
      const args = Args.parse(
        rest,
        { url: { type: 'string' }, sha256: { type: 'string' }, cache: { type: 'string' } },
        USAGE,
      );
      const [name] = need(args, 1, 'dataset name') as [string];
      const source = DATASET_SOURCES.find((d) => d.name === name);
      if (!source)
        throw new InvalidArgumentError(
          `unknown dataset "${name}"; known: ${DATASET_SOURCES.map((d) => d.name).join(', ')}`,
        );
      const cache = path.join(args.string('cache') ?? defaultCacheDir(io), 'datasets');
      const archive = path.join(cache, source.fileName);
      const recorded = `${archive}.sha256`;
      const pinned =
        args.string('sha256') ??
        source.sha256 ??
        (existsSync(recorded) ? (await readFile(recorded, 'utf8')).trim() : undefined);
      if (!pinned)
        err(
          io,
          `warning: no pinned SHA-256 for ${name}; the digest of this download is recorded in ${recorded} and checked from now on`,
        );
      const progress = new ProgressLine(io);
      const r = await download({
        url: args.string('url') ?? source.url,
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
      const dest = args.positionals[1] ?? path.join('data', name);
      const extracted = path.join(cache, `${name}-extracted`);
      await rm(extracted, { recursive: true, force: true });
      await extractZip(archive, extracted);
      const s = await importDataset(source.importAs, extracted, dest);
      await rm(extracted, { recursive: true, force: true });
      out(io, `${dest}: ${s.classes} classes, ${s.train} train / ${s.val} val images`);
      return 0;
    }
    case 'demo': {
      const args = Args.parse(
        rest,
        {
          source: { type: 'string' },
          'train-per-class': { type: 'string' },
          'val-per-class': { type: 'string' },
          size: { type: 'string' },
          seed: { type: 'string' },
        },
        USAGE,
      );
      const [dest] = need(args, 1, 'DEST') as [string];
      const options = {
        trainPerClass: args.int('train-per-class', 100, 1),
        valPerClass: args.int('val-per-class', 25, 1),
        size: args.int('size', 64, 16),
        seed: args.int('seed', 0, 0),
      };
      const r = await writeDemoDataset(dest, options);
      out(io, `wrote ${r.images} images to ${dest} (train/ and val/, ${DEMO_CLASSES.length} classes)`);
      const source = args.string('source');
      if (source !== undefined) {
        const s = await writeDemoSourceDataset(source, options);
        out(
          io,
          `wrote ${s.images} images to ${source} (the source domain: ${DEMO_SOURCE_CLASSES.length} classes, ${DEMO_SOURCE_CLASSES.join(', ')})`,
        );
      }
      return 0;
    }
    default:
      throw new InvalidArgumentError(`unknown data command "${sub ?? ''}"\nusage: ${USAGE}`);
  }
}
