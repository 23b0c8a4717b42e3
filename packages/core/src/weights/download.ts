import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { DownloadError, InvalidArgumentError } from '../errors.js';

export interface DownloadOptions {
  readonly url: string;
  /** Final path; the partial download lives at `${dest}.part` and is resumed from there. */
  readonly dest: string;
  /** Full expected SHA-256 (hex). */
  readonly sha256?: string;
  /** Expected leading hex digits of the SHA-256 (torch hub's file-name rule). */
  readonly sha256Prefix?: string;
  readonly onProgress?: (receivedBytes: number, totalBytes: number | undefined) => void;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Accept a download without a known checksum (the caller records the digest it returns). */
  readonly unpinned?: boolean;
}

export interface DownloadResult {
  readonly file: string;
  readonly sha256: string;
  readonly bytes: number;
  /** `cached`: already present and verified; `resumed`: continued a partial file. */
  readonly how: 'cached' | 'downloaded' | 'resumed';
}

async function hashFile(file: string, hash: Hash): Promise<number> {
  let n = 0;
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    n += (chunk as Buffer).length;
  }
  return n;
}

async function sizeOf(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).size;
  } catch {
    return undefined;
  }
}

function verify(opts: DownloadOptions, digest: string): boolean {
  if (opts.sha256) return digest === opts.sha256.toLowerCase();
  if (opts.sha256Prefix) return digest.startsWith(opts.sha256Prefix.toLowerCase());
  return true;
}

/**
 * Downloads over HTTP(S) into `dest`, resuming a partial file with a Range request, and verifies the
 * SHA-256 before the file takes its final name. A file already at `dest` is verified and reused.
 */
export async function download(opts: DownloadOptions): Promise<DownloadResult> {
  if (!opts.sha256 && !opts.sha256Prefix && !opts.unpinned) {
    throw new InvalidArgumentError(`refusing to download ${opts.url} without a checksum (pass sha256)`);
  }
  await mkdir(path.dirname(opts.dest), { recursive: true });
  const existing = await sizeOf(opts.dest);
  if (existing !== undefined) {
    const h = createHash('sha256');
    await hashFile(opts.dest, h);
    const digest = h.digest('hex');
    if (verify(opts, digest)) return { file: opts.dest, sha256: digest, bytes: existing, how: 'cached' };
    await rm(opts.dest);
  }
  const part = `${opts.dest}.part`;
  let offset = (await sizeOf(part)) ?? 0;
  const headers: Record<string, string> = offset > 0 ? { Range: `bytes=${offset}-` } : {};
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 30 * 60_000);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  let res: Response;
  try {
    res = await fetch(opts.url, { headers, signal, redirect: 'follow' });
  } catch (e) {
    throw new DownloadError(`cannot fetch ${opts.url}: ${(e as Error).message}`, { cause: e });
  }
  if (res.status === 416 && offset > 0) {
    // The partial file is already complete (or longer than the resource); verify it below.
  } else if (res.status === 200 && offset > 0) {
    offset = 0; // the server ignored the Range request: start over
  } else if (res.status !== 200 && res.status !== 206) {
    throw new DownloadError(`GET ${opts.url} answered HTTP ${res.status} ${res.statusText}`);
  }
  const hash = createHash('sha256');
  if (offset > 0) await hashFile(part, hash);
  let received = offset;
  if (res.status === 200 || res.status === 206) {
    const length = Number(res.headers.get('content-length') ?? Number.NaN);
    const total = Number.isFinite(length) ? length + offset : undefined;
    const out = createWriteStream(part, { flags: offset > 0 ? 'a' : 'w' });
    try {
      if (!res.body) throw new DownloadError(`GET ${opts.url} returned no body`);
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        received += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        opts.onProgress?.(received, total);
      }
    } catch (e) {
      throw e instanceof DownloadError
        ? e
        : new DownloadError(
            `download of ${opts.url} broke off at ${received} bytes (run again to resume): ${(e as Error).message}`,
            {
              cause: e,
            },
          );
    } finally {
      await new Promise<void>((r) => out.end(() => r()));
    }
    if (total !== undefined && received !== total) {
      throw new DownloadError(`download of ${opts.url} ended at ${received} of ${total} bytes (run again to resume)`);
    }
  }
  const digest = hash.digest('hex');
  if (!verify(opts, digest)) {
    await rm(part, { force: true });
    throw new DownloadError(
      `checksum mismatch for ${opts.url}: got sha256 ${digest}, expected ${opts.sha256 ?? `${opts.sha256Prefix}...`}; the partial file was removed`,
    );
  }
  await rename(part, opts.dest);
  return { file: opts.dest, sha256: digest, bytes: received, how: offset > 0 ? 'resumed' : 'downloaded' };
}
