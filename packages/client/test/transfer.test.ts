import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { describe, expect, test } from 'vitest';
import { FileKind, type CheckpointChunk } from '@ferry/protocol';
import {
  ChunkSink,
  fetchSourceWeights,
  fileChunks,
  sendChunks,
  sourceWeightsFile,
  withBackoff,
  type ChunkStream,
} from '@ferry/client';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-transfer-'));
const header = { attemptId: 'a1', cellId: 'c1', epochsDone: 3, kind: FileKind.FILE_KIND_CHECKPOINT };

async function collect(file: string, chunkBytes: number): Promise<CheckpointChunk[]> {
  const out: CheckpointChunk[] = [];
  for await (const c of fileChunks(file, header, chunkBytes)) out.push(c);
  return out;
}

async function receive(chunks: readonly CheckpointChunk[], maxBytes?: number) {
  const sink = await ChunkSink.open(path.join(dir, `in-${randomBytes(4).toString('hex')}`), maxBytes);
  for (const c of chunks) {
    const problem = await sink.write(c);
    if (problem) {
      await sink.discard();
      return { problem, file: sink.file };
    }
  }
  return { ...(await sink.close()), file: sink.file };
}

describe('checkpoint transfer (one sender and one receiver for both directions)', () => {
  const data = randomBytes(10_000 + 123);
  const file = path.join(dir, 'ckpt.bin');
  writeFileSync(file, data);

  test('a file goes out as ordered chunks with its SHA-256 on the last, and comes back byte for byte', async () => {
    const chunks = await collect(file, 1024);
    expect(chunks).toHaveLength(Math.ceil(data.length / 1024));
    expect(chunks.map((c) => c.offset)).toEqual(chunks.map((_, i) => i * 1024));
    expect(chunks.filter((c) => c.last)).toHaveLength(1);
    expect(chunks.at(-1)!.sha256).toBe(createHash('sha256').update(data).digest('hex'));
    expect(chunks.every((c) => c.totalBytes === data.length && c.epochsDone === 3)).toBe(true);
    const r = await receive(chunks);
    expect('last' in r && r.last.epochsDone).toBe(3);
    expect(readFileSync(r.file).equals(data)).toBe(true);
  });

  test('the receiver refuses what a broken or hostile sender sends, and keeps nothing of it', async () => {
    const chunks = await collect(file, 1024);
    const cases: [string, CheckpointChunk[], RegExp, number?][] = [
      ['a gap', [chunks[0]!, chunks[2]!], /offset 2048; the next byte expected is 1024/],
      ['a repeat', [chunks[0]!, chunks[0]!], /offset 0; the next byte expected is 1024/],
      ['another attempt', [chunks[0]!, { ...chunks[1]!, attemptId: 'a2' }], /one attempt, cell and file/],
      ['over the limit', chunks, /larger than the 5000-byte limit/, 5000],
      ['after the last', [...chunks, chunks.at(-1)!], /after the last/],
      ['no last chunk', chunks.slice(0, -1), /without its last chunk/],
      [
        'a flipped byte',
        chunks.map((c, i) => (i === 3 ? { ...c, data: Buffer.from(c.data).fill(0, 0, 1) } : c)),
        /checksum mismatch/,
      ],
    ];
    for (const [name, sent, why, max] of cases) {
      const r = await receive(sent, max);
      expect('problem' in r ? r.problem : 'accepted', name).toMatch(why);
    }
  });

  test('an empty file is one empty last chunk', async () => {
    const empty = path.join(dir, 'empty.bin');
    writeFileSync(empty, '');
    const chunks = await collect(empty, 1024);
    expect(chunks).toHaveLength(1);
    expect(chunks[0]!.last).toBe(true);
    expect('last' in (await receive(chunks))).toBe(true);
  });

  test('sendChunks waits for drain (back-pressure) and stops when the other side goes away', async () => {
    const written: CheckpointChunk[] = [];
    let ended = false;
    const stream: EventEmitter & { write(c: CheckpointChunk): boolean; end(): void } = Object.assign(
      new EventEmitter(),
      {
        write(c: CheckpointChunk) {
          written.push(c);
          setTimeout(() => stream.emit('drain'), 1);
          return false; // every write fills the buffer
        },
        end() {
          ended = true;
        },
      },
    );
    expect(await sendChunks(stream as unknown as ChunkStream, fileChunks(file, header, 4096))).toBe(true);
    expect(written).toHaveLength(3);
    expect(ended).toBe(true);
    const gone: EventEmitter = Object.assign(new EventEmitter(), {
      write() {
        setTimeout(() => gone.emit('cancelled'), 1);
        return false;
      },
      end() {
        throw new Error('must not end a cancelled stream');
      },
    });
    expect(await sendChunks(gone as unknown as ChunkStream, fileChunks(file, header, 4096))).toBe(false);
    expect(existsSync(file)).toBe(true);
  });
});

describe('backoff', () => {
  test('waits min, 2 min, ... up to max between tries while retry says so; otherwise the error is thrown', async () => {
    const delays: number[] = [];
    let tries = 0;
    const v = await withBackoff(
      async () => {
        if (++tries < 5) throw new Error(`try ${tries}`);
        return 'ok';
      },
      { policy: { minMs: 1, maxMs: 4 }, retry: () => true, onRetry: (_e, d) => delays.push(d) },
    );
    expect(v).toBe('ok');
    expect(delays).toEqual([1, 2, 4, 4]);
    await expect(withBackoff(() => Promise.reject(new Error('final')), { retry: () => false })).rejects.toThrow(
      'final',
    );
  });
});

describe("a source cell's cached best weights", () => {
  test('are used only when they are the file the coordinator holds (by digest); another digest is fetched again', async () => {
    const cache = mkdtempSync(path.join(tmpdir(), 'ferry-source-'));
    const id = 'ab'.repeat(32);
    const body = Buffer.from('the weights of one training of the source');
    const digest = createHash('sha256').update(body).digest('hex');
    const file = sourceWeightsFile(cache, id, digest);
    expect(path.basename(file)).toBe(`${id}.${digest.slice(0, 16)}.safetensors`);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, body);
    // Nothing listens here: a hit needs no coordinator...
    const nowhere = { address: '127.0.0.1:1' };
    expect(await fetchSourceWeights(nowhere, cache, id, digest)).toEqual({ file, fetched: false, bytes: body.length });
    // ...a source retrained under the same id (another digest), or no digest at all, is fetched.
    for (const expected of ['cd'.repeat(32), '']) {
      const e = await fetchSourceWeights(nowhere, cache, id, expected).catch((x: unknown) => x);
      expect((e as { code?: string }).code).toBe('FERRY_ERR_SOURCE_WEIGHTS');
    }
    await expect(fetchSourceWeights(nowhere, cache, '../etc', digest)).rejects.toThrow(/not a cell id/);
  });
});
