import path from 'node:path';
import { InvalidArgumentError, download, getZooEntry } from '@ferry/core';
import { Args } from '../args.js';
import { ProgressLine, formatBytes, out, type CliIo } from '../io.js';

export const USAGE = 'ferry weights pull <model> [--cache DIR] [--url URL --sha256 HEX]';

export function defaultCacheDir(io: CliIo): string {
  const home = io.env['HOME'] ?? '.';
  return io.env['FERRY_CACHE'] ?? path.join(io.env['XDG_CACHE_HOME'] ?? path.join(home, '.cache'), 'ferry');
}

/** `ferry weights pull`: official torchvision weights into the cache, SHA-256 checked, resumable. */
export async function weightsCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'pull') throw new InvalidArgumentError(`unknown weights command "${sub ?? ''}"\nusage: ${USAGE}`);
  const args = Args.parse(
    rest,
    { cache: { type: 'string' }, url: { type: 'string' }, sha256: { type: 'string' } },
    USAGE,
  );
  const values = { url: args.string('url'), sha256: args.string('sha256'), cache: args.string('cache') };
  const name = args.positionals[0];
  if (!name) throw new InvalidArgumentError(`which model? usage: ${USAGE}`);
  const entry = getZooEntry(name);
  const source = entry.weights;
  if (!source && !values.url)
    throw new InvalidArgumentError(`${name} has no official weights; pass --url and --sha256`);
  if (values.url && !values.sha256)
    throw new InvalidArgumentError('--url needs --sha256 (ferry never installs unverified weights)');
  const url = values.url ?? source!.url;
  const fileName = values.url ? path.basename(new URL(url).pathname) || `${name}.pth` : source!.fileName;
  const dest = path.join(values.cache ?? defaultCacheDir(io), 'weights', fileName);
  const progress = new ProgressLine(io);
  const r = await download({
    url,
    dest,
    ...(values.sha256
      ? { sha256: values.sha256 }
      : source?.sha256
        ? { sha256: source.sha256 }
        : { sha256Prefix: source!.sha256Prefix }),
    onProgress: (got, total) =>
      progress.update(
        total ? got / total : 0,
        `${formatBytes(got)}${total ? ` of ${formatBytes(total)}` : ''} ${fileName}`,
      ),
  });
  progress.done(`${r.how}: ${r.file} (${formatBytes(r.bytes)}, sha256 ${r.sha256})`);
  out(io, r.file);
  return 0;
}
