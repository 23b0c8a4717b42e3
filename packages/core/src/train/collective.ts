import { FerryError } from '@ferry/common';
/**
 * Collectives for data-parallel training: a ring all-reduce (reduce-scatter, then all-gather) over
 * an abstract transport, so the arithmetic is a pure function of Float32Arrays, tested without
 * TensorFlow.js or sockets. Every message names its generation and operation; a receive that does
 * not complete within the deadline aborts the generation.
 */

/** How a rank exchanges chunks with its ring neighbours (in-memory in tests, gRPC in workers). */
export interface RingTransport {
  readonly rank: number;
  readonly worldSize: number;
  /**
   * Sends a chunk to rank (rank + 1) % worldSize. `data` is a view of the caller's buffer: the
   * transport must not read it after the promise resolves (copy it, or hand it to the kernel first).
   */
  send(key: string, data: Float32Array): Promise<void>;
  /** Receives the chunk with this key from rank (rank - 1 + worldSize) % worldSize. */
  recv(key: string, deadlineMs: number): Promise<Float32Array>;
  /** Takes back a received chunk the ring is done with, for a later receive to fill (optional). */
  recycle?(chunk: Float32Array): void;
}

/** A ring operation missed its deadline or lost a member (the coordinator re-forms the group). */
export class CollectiveError extends FerryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_COLLECTIVE', message, options);
  }
}

/** Elements per message (~1 MB of float32). */
export const CHUNK_ELEMENTS = 1 << 18;

/** The k segments a buffer of n elements is cut into for the ring (as equal as possible). */
export function segments(n: number, k: number): [number, number][] {
  const out: [number, number][] = [];
  const base = Math.floor(n / k);
  const extra = n % k;
  let start = 0;
  for (let i = 0; i < k; i++) {
    const len = base + (i < extra ? 1 : 0);
    out.push([start, start + len]);
    start += len;
  }
  return out;
}

function* chunksOf(from: number, to: number): Generator<[number, number]> {
  for (let s = from; s < to; s += CHUNK_ELEMENTS) yield [s, Math.min(to, s + CHUNK_ELEMENTS)];
  if (from === to) yield [from, to];
}

/**
 * In-place ring all-reduce (sum) of `buf` across the ring: after it, every rank holds the
 * element-wise sum of every rank's buffer. 2(k-1) steps; each moves 1/k of the buffer in chunks.
 * Summation order is the same on every rank for each element (it follows the ring), so all ranks
 * end with bitwise-identical buffers.
 */
export async function ringAllReduceSum(
  t: RingTransport,
  buf: Float32Array,
  op: string,
  deadlineMs: number,
): Promise<Float32Array> {
  const k = t.worldSize;
  if (k === 1) return buf;
  const segs = segments(buf.length, k);
  const r = t.rank;
  const seg = (i: number): [number, number] => segs[((i % k) + k) % k]!;
  // Reduce-scatter: at step s, send segment (r - s) and add the received segment (r - s - 1).
  for (let s = 0; s < k - 1; s++) {
    await ringStep(t, buf, seg(r - s), seg(r - s - 1), `${op}/rs/${s}`, deadlineMs, (a, got) => {
      for (let i = 0; i < got.length; i++) buf[a + i]! += got[i]!;
    });
  }
  // All-gather: rank r owns the complete segment (r + 1); pass complete segments around.
  for (let s = 0; s < k - 1; s++) {
    await ringStep(t, buf, seg(r + 1 - s), seg(r - s), `${op}/ag/${s}`, deadlineMs, (a, got) => buf.set(got, a));
  }
  return buf;
}

/** One ring step: send one segment chunk by chunk to the right, take one from the left chunk by chunk. */
async function ringStep(
  t: RingTransport,
  buf: Float32Array,
  sendSeg: [number, number],
  recvSeg: [number, number],
  key: string,
  deadlineMs: number,
  take: (offset: number, got: Float32Array) => void,
): Promise<void> {
  const sends: Promise<void>[] = [];
  let c = 0;
  // Views, not copies (a fresh 22 MB copy costs more than sending it): the sent segment is not
  // written in this step, and the step ends only when every send has resolved.
  for (const [a, b] of chunksOf(sendSeg[0], sendSeg[1])) sends.push(t.send(`${key}/${c++}`, buf.subarray(a, b)));
  c = 0;
  for (const [a, b] of chunksOf(recvSeg[0], recvSeg[1])) {
    const got = await t.recv(`${key}/${c++}`, deadlineMs);
    if (got.length !== b - a) throw new CollectiveError(`${key}: chunk of ${got.length} values, expected ${b - a}`);
    take(a, got);
    t.recycle?.(got);
  }
  await Promise.all(sends);
}

/** Mean across ranks (sum, then divide by the world size). */
export async function ringAllReduceMean(
  t: RingTransport,
  buf: Float32Array,
  op: string,
  deadlineMs: number,
): Promise<Float32Array> {
  await ringAllReduceSum(t, buf, op, deadlineMs);
  if (t.worldSize > 1) for (let i = 0; i < buf.length; i++) buf[i]! /= t.worldSize;
  return buf;
}

/** Rank 0's buffer on every rank (a sum in which the other ranks contribute zeros: exact). */
export async function broadcastFromRank0(
  t: RingTransport,
  buf: Float32Array,
  op: string,
  deadlineMs: number,
): Promise<Float32Array> {
  if (t.rank !== 0) buf.fill(0);
  return ringAllReduceSum(t, buf, op, deadlineMs);
}

/** Chunks that arrived before anyone asked for them, and receivers waiting for chunks (keyed). */
export class Mailbox {
  private readonly slots = new Map<
    string,
    { value?: Float32Array; waiter?: (v: Float32Array) => void; fail?: (e: Error) => void }
  >();

  put(key: string, data: Float32Array): void {
    const slot = this.slots.get(key);
    if (slot?.waiter) {
      this.slots.delete(key);
      slot.waiter(data);
    } else this.slots.set(key, { value: data });
  }

  take(key: string, deadlineMs: number, what: string): Promise<Float32Array> {
    const slot = this.slots.get(key);
    if (slot?.value) {
      this.slots.delete(key);
      return Promise.resolve(slot.value);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.slots.delete(key);
        reject(new CollectiveError(`no ${key} from ${what} within ${deadlineMs} ms`));
      }, deadlineMs);
      this.slots.set(key, {
        waiter: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        fail: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** Bytes received and not yet taken (what a flood would grow). */
  get bufferedBytes(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.value?.byteLength ?? 0;
    return n;
  }

  /** Fails every waiting receiver (the group was aborted). */
  abort(reason: Error): void {
    for (const [k, s] of this.slots) {
      s.fail?.(reason);
      this.slots.delete(k);
    }
  }
}

/** An in-memory ring for tests and single-process use: one mailbox per rank. */
export function memoryRing(worldSize: number, latencyMs = 0): RingTransport[] {
  const boxes = Array.from({ length: worldSize }, () => new Mailbox());
  return Array.from({ length: worldSize }, (_, rank) => ({
    rank,
    worldSize,
    async send(key: string, data: Float32Array): Promise<void> {
      const copy = data.slice();
      if (latencyMs) await new Promise((r) => setTimeout(r, latencyMs));
      boxes[(rank + 1) % worldSize]!.put(key, copy);
    },
    recv(key: string, deadlineMs: number): Promise<Float32Array> {
      return boxes[rank]!.take(key, deadlineMs, `rank ${(rank - 1 + worldSize) % worldSize}`);
    },
  }));
}

/**
 * torch DistributedSampler: the epoch's permutation padded (by wrapping) to a multiple of the world
 * size, then every world-size-th index starting at the rank. Every rank gets the same count.
 */
export function distributedShard(order: readonly number[], rank: number, worldSize: number, pad = true): number[] {
  const n = order.length;
  const total = pad ? Math.ceil(n / worldSize) * worldSize : n;
  const padded = pad ? [...order, ...order.slice(0, total - n)] : [...order];
  const out: number[] = [];
  for (let i = rank; i < padded.length; i += worldSize) out.push(padded[i]!);
  return out;
}
