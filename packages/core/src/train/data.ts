import { InvalidArgumentError } from '../errors.js';
import { Rng } from '../util/rng.js';

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
    private readonly options: { batchSize: number; shuffle: boolean; classNames?: readonly string[] },
  ) {
    this.views = values instanceof Float32Array ? [values] : values;
    this.itemSize = itemShape.reduce((a, b) => a * b, 1);
    for (const v of this.views) {
      if (v.length !== labels.length * this.itemSize) {
        throw new InvalidArgumentError(`ArrayBatchSource: ${v.length} values for ${labels.length} items of shape [${itemShape.join(', ')}]`);
      }
    }
    if (this.views.length === 0) throw new InvalidArgumentError('ArrayBatchSource needs at least one view');
    if (options.batchSize < 1) throw new InvalidArgumentError('batchSize must be at least 1');
    this.size = labels.length;
    this.batchSize = options.batchSize;
    this.classNames = options.classNames ?? Array.from({ length: numClasses }, (_, i) => `class${i}`);
  }

  async *batches(epoch: number, seed: number): AsyncIterable<Batch> {
    const values = this.views[epoch % this.views.length]!;
    const order = this.options.shuffle
      ? Rng.fromSeed(streamSeed(seed, epoch, STREAM_SHUFFLE)).permutation(this.size)
      : Array.from({ length: this.size }, (_, i) => i);
    for (let start = 0; start < this.size; start += this.options.batchSize) {
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
