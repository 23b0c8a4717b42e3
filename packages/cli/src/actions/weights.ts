import path from 'node:path';
import { InvalidArgumentError, download, getZooEntry } from '@ferry/core';
import { ProgressLine, formatBytes, out, type CliIo } from '../io.js';
import { defaultCacheDir } from '../paths.js';

export interface WeightsPullOptions {
  readonly cache?: string;
  readonly url?: string;
  readonly sha256?: string;
}

/** `ferry weights pull`: official torchvision weights into the cache, SHA-256 checked, resumable. */
export async function weightsPull(name: string, values: WeightsPullOptions, io: CliIo): Promise<number> {
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
