import { createHash } from 'node:crypto';
import { createReadStream, rmSync, statSync } from 'node:fs';
import { open, rename, type FileHandle } from 'node:fs/promises';
import type { CheckpointChunk, FileKind } from '@ferry/protocol';

/*
 * Checkpoints cross the wire as a stream of CheckpointChunk, both ways (a worker's upload, the
 * coordinator's download to a resuming worker): one sender and one receiver for both directions.
 * Offsets follow each other from 0, the last chunk carries the file's SHA-256, and the receiver
 * checks all of it before the file is used.
 */

export const CHUNK_BYTES = 1 << 20;

/** Which checkpoint a stream carries. */
export interface ChunkHeader {
  readonly attemptId: string;
  readonly cellId: string;
  /** Epochs completed in this checkpoint. */
  readonly epochsDone: number;
  /** The latest epoch's checkpoint, or the best-val weights (the cell's artifact). */
  readonly kind: FileKind;
}

/** A file as chunks of `chunkBytes`, the last with its SHA-256 (an empty file is one empty last chunk). */
export async function* fileChunks(
  file: string,
  header: ChunkHeader,
  chunkBytes = CHUNK_BYTES,
): AsyncGenerator<CheckpointChunk> {
  const total = statSync(file).size;
  const hash = createHash('sha256');
  let offset = 0;
  const chunk = (data: Buffer, last: boolean): CheckpointChunk => ({
    ...header,
    offset,
    data,
    last,
    sha256: last ? hash.digest('hex') : '',
    totalBytes: total,
  });
  if (total === 0) {
    yield chunk(Buffer.alloc(0), true);
    return;
  }
  for await (const buf of createReadStream(file, { highWaterMark: chunkBytes })) {
    const data = buf as Buffer;
    hash.update(data);
    const c = chunk(data, offset + data.length >= total);
    offset += data.length;
    yield c;
  }
}

/** The writable side of a gRPC stream (client upload or server download). */
export interface ChunkStream {
  write(chunk: CheckpointChunk): boolean;
  end(): void;
  once(event: 'drain' | 'close' | 'error' | 'cancelled', listener: () => void): unknown;
  off(event: 'drain' | 'close' | 'error' | 'cancelled', listener: () => void): unknown;
}

/** Waits for the stream to take more; false when it closed, failed or was cancelled instead. */
function drained(stream: ChunkStream): Promise<boolean> {
  return new Promise((resolve) => {
    const events = ['drain', 'close', 'error', 'cancelled'] as const;
    const listeners = events.map((ev) => {
      const l = (): void => {
        for (const [i, e] of events.entries()) stream.off(e, listeners[i]!);
        resolve(ev === 'drain');
      };
      stream.once(ev, l);
      return l;
    });
  });
}

/**
 * Writes the chunks with back-pressure (no more than the stream's buffer in memory) and ends the
 * stream; false when the other side went away before the end.
 */
export async function sendChunks(stream: ChunkStream, chunks: AsyncIterable<CheckpointChunk>): Promise<boolean> {
  for await (const c of chunks) {
    if (!stream.write(c) && !(await drained(stream))) return false;
  }
  stream.end();
  return true;
}

/**
 * Receives one stream of chunks into a file: every chunk of the same attempt and cell as the
 * first, offsets following each other from 0, at most `maxBytes`; `close` checks the last chunk
 * arrived and the SHA-256. A problem is returned as a message (the caller decides how to answer).
 */
export class ChunkSink {
  private first: CheckpointChunk | undefined;
  private last: CheckpointChunk | undefined;
  private written = 0;
  private readonly hash = createHash('sha256');

  private constructor(
    readonly file: string,
    private fh: FileHandle | undefined,
    private readonly maxBytes: number,
  ) {}

  static async open(file: string, maxBytes = Number.MAX_SAFE_INTEGER): Promise<ChunkSink> {
    return new ChunkSink(file, await open(file, 'w'), maxBytes);
  }

  /** Writes one chunk; a problem with it as a message (nothing of it written). */
  async write(chunk: CheckpointChunk): Promise<string | undefined> {
    this.first ??= chunk;
    if (this.last) return 'a chunk after the last one';
    if (
      chunk.attemptId !== this.first.attemptId ||
      chunk.cellId !== this.first.cellId ||
      chunk.kind !== this.first.kind
    )
      return 'every chunk of an upload belongs to one attempt, cell and file';
    if (chunk.offset !== this.written)
      return `chunk at offset ${chunk.offset}; the next byte expected is ${this.written} (chunks follow each other from 0)`;
    if (this.written + chunk.data.length > this.maxBytes)
      return `checkpoint larger than the ${this.maxBytes}-byte limit (--max-checkpoint-mb)`;
    this.hash.update(chunk.data);
    await this.fh!.write(chunk.data, 0, chunk.data.length, this.written);
    this.written += chunk.data.length;
    if (chunk.last) this.last = chunk;
    return undefined;
  }

  /** The whole file is in: its last chunk, or what is wrong with it. */
  async close(): Promise<{ readonly last: CheckpointChunk } | { readonly problem: string }> {
    await this.release();
    if (!this.last) return { problem: 'the stream ended without its last chunk' };
    const digest = this.hash.digest('hex');
    if (digest !== this.last.sha256) return { problem: `checksum mismatch (${digest} != ${this.last.sha256})` };
    return { last: this.last };
  }

  /** Closes and deletes the file. */
  async discard(): Promise<void> {
    await this.release();
    rmSync(this.file, { force: true });
  }

  private async release(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
  }
}

/** A readable gRPC stream of chunks that can be cancelled (a download of either kind). */
export interface ChunkSource extends AsyncIterable<CheckpointChunk> {
  cancel(): void;
}

/**
 * A whole download to `dest`: through a ChunkSink next to it (order, identity, completeness,
 * SHA-256), renamed into place only when all of it checks; `what` names the file in errors.
 * Returns the SHA-256 the file was checked against.
 */
export async function receiveFile(source: ChunkSource, dest: string, what: string): Promise<{ sha256: string }> {
  const sink = await ChunkSink.open(`${dest}.part`);
  try {
    for await (const chunk of source) {
      const problem = await sink.write(chunk);
      if (problem) {
        source.cancel();
        throw new Error(`${what} refused: ${problem}`);
      }
    }
    const done = await sink.close();
    if ('problem' in done) throw new Error(`${what} refused: ${done.problem}`);
    await rename(sink.file, dest);
    return { sha256: done.last.sha256 };
  } catch (e) {
    await sink.discard();
    throw e;
  }
}
