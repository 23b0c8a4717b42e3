import { InvalidArgumentError } from '../errors.js';
import { Rng } from '../util/rng.js';

/** One batch, NHWC float32, already normalised. */
export interface Batch {
  readonly x: Float32Array;
  readonly shape: readonly [number, number, number, number];
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

/** In-memory images (tests, synthetic benchmarks): shuffled each epoch when `shuffle` is set. */
export class ArrayBatchSource implements BatchSource {
  readonly size: number;
  readonly batchSize: number;
  readonly classNames: readonly string[];
  private readonly imageSize: number;

  constructor(
    private readonly images: Float32Array,
    private readonly labels: Int32Array,
    private readonly height: number,
    private readonly width: number,
    readonly numClasses: number,
    private readonly options: { batchSize: number; shuffle: boolean; classNames?: readonly string[] },
  ) {
    this.imageSize = height * width * 3;
    if (images.length !== labels.length * this.imageSize) {
      throw new InvalidArgumentError(`ArrayBatchSource: ${images.length} values for ${labels.length} images of ${height}x${width}x3`);
    }
    if (options.batchSize < 1) throw new InvalidArgumentError('batchSize must be at least 1');
    this.size = labels.length;
    this.batchSize = options.batchSize;
    this.classNames = options.classNames ?? Array.from({ length: numClasses }, (_, i) => `class${i}`);
  }

  async *batches(epoch: number, seed: number): AsyncIterable<Batch> {
    const order = this.options.shuffle
      ? Rng.fromSeed(streamSeed(seed, epoch, STREAM_SHUFFLE)).permutation(this.size)
      : Array.from({ length: this.size }, (_, i) => i);
    for (let start = 0; start < this.size; start += this.options.batchSize) {
      const idx = order.slice(start, start + this.options.batchSize);
      const x = new Float32Array(idx.length * this.imageSize);
      const labels = new Int32Array(idx.length);
      idx.forEach((src, j) => {
        x.set(this.images.subarray(src * this.imageSize, (src + 1) * this.imageSize), j * this.imageSize);
        labels[j] = this.labels[src]!;
      });
      yield { x, shape: [idx.length, this.height, this.width, 3], labels };
    }
  }
}
