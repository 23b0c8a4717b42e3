import { InvalidArgumentError } from '../errors.js';
import { Rng } from '../util/rng.js';
import { distributedShard } from './collective.js';

/** This rank's part of every epoch (torch DistributedSampler; `pad` repeats samples to equal shards). */
export interface ShardSpec {
  readonly rank: number;
  readonly worldSize: number;
  readonly pad: boolean;
}

/** The shard of an epoch's order (the whole order without a shard). */
export function applyShard(order: readonly number[], shard: ShardSpec | undefined): number[] {
  return shard ? distributedShard(order, shard.rank, shard.worldSize, shard.pad) : [...order];
}

export function shardSize(n: number, shard: ShardSpec | undefined): number {
  if (!shard) return n;
  return shard.pad
    ? Math.ceil(n / shard.worldSize)
    : Math.floor(n / shard.worldSize) + (shard.rank < n % shard.worldSize ? 1 : 0);
}

/** One batch: NHWC float32 images, already normalised (or, for cached features, [N, D]). */
export interface Batch {
  readonly x: Float32Array;
  readonly shape: readonly number[];
  readonly labels: Int32Array;
}

/** What the trainer reads: a sized, re-iterable, seeded sequence of batches per epoch. */
export interface BatchSource {
  /** Number of images in one epoch. */
  readonly size: number;
  readonly batchSize: number;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  /** The batches of `epoch`; the same (epoch, seed) gives the same batches. */
  batches(epoch: number, seed: number): AsyncIterable<Batch>;
}

/** Mixes a seed with an epoch and a purpose into an independent stream seed. */
export function streamSeed(seed: number, epoch: number, purpose: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (epoch + 1), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ ((purpose + 1) * 0x27d4eb2d), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export const STREAM_SHUFFLE = 1;
export const STREAM_DROPOUT = 2;
export const STREAM_AUGMENT = 3;

/**
 * In-memory items (tests, synthetic benchmarks, cached features), shuffled each epoch when
 * `shuffle` is set. With several `views` (e.g. K augmented feature views), epoch e reads view e % K.
 */
export class ArrayBatchSource implements BatchSource {
  readonly size: number;
  readonly batchSize: number;
  readonly classNames: readonly string[];
  private readonly itemSize: number;
  private readonly views: readonly Float32Array[];

  constructor(
    values: Float32Array | readonly Float32Array[],
    private readonly labels: Int32Array,
    private readonly itemShape: readonly number[],
    readonly numClasses: number,
    private readonly options: {
      batchSize: number;
      shuffle: boolean;
      classNames?: readonly string[];
      shard?: ShardSpec;
    },
  ) {
    this.views = values instanceof Float32Array ? [values] : values;
    this.itemSize = itemShape.reduce((a, b) => a * b, 1);
    for (const v of this.views) {
      if (v.length !== labels.length * this.itemSize) {
        throw new InvalidArgumentError(
          `ArrayBatchSource: ${v.length} values for ${labels.length} items of shape [${itemShape.join(', ')}]`,
        );
      }
    }
    if (this.views.length === 0) throw new InvalidArgumentError('ArrayBatchSource needs at least one view');
    if (options.batchSize < 1) throw new InvalidArgumentError('batchSize must be at least 1');
    this.size = shardSize(labels.length, options.shard);
    this.batchSize = options.batchSize;
    this.classNames = options.classNames ?? Array.from({ length: numClasses }, (_, i) => `class${i}`);
  }

  async *batches(epoch: number, seed: number): AsyncIterable<Batch> {
    const values = this.views[epoch % this.views.length]!;
    const n = this.labels.length;
    const order = applyShard(
      this.options.shuffle
        ? Rng.fromSeed(streamSeed(seed, epoch, STREAM_SHUFFLE)).permutation(n)
        : Array.from({ length: n }, (_, i) => i),
      this.options.shard,
    );
    for (let start = 0; start < order.length; start += this.options.batchSize) {
      const idx = order.slice(start, start + this.options.batchSize);
      const x = new Float32Array(idx.length * this.itemSize);
      const labels = new Int32Array(idx.length);
      idx.forEach((src, j) => {
        x.set(values.subarray(src * this.itemSize, (src + 1) * this.itemSize), j * this.itemSize);
        labels[j] = this.labels[src]!;
      });
      yield { x, shape: [idx.length, ...this.itemShape], labels };
    }
  }
}
