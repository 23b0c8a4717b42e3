import { Rng } from '../util/rng.js';
import {
  STREAM_AUGMENT,
  STREAM_SHUFFLE,
  applyShard,
  shardSize,
  streamSeed,
  type Batch,
  type BatchSource,
  type ShardSpec,
} from '../train/data.js';
import type { DecodePool, DecodeResult } from './decode-pool.js';
import type { Sample } from './folder.js';
import type { TransformSpec } from './transforms.js';

export interface SkippedFile {
  readonly file: string;
  readonly reason: string;
}

export interface ImageFolderSourceOptions {
  readonly samples: readonly Sample[];
  readonly classNames: readonly string[];
  readonly spec: TransformSpec;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly pool: DecodePool;
  /** Batches decoded ahead of the one being trained on. */
  readonly prefetchBatches?: number;
  /** Called once per file that cannot be decoded; the file is left out from then on. */
  readonly onSkip?: (skipped: SkippedFile) => void;
  /** Data-parallel: this rank's shard of every epoch. */
  readonly shard?: ShardSpec;
}

/**
 * Batches of an ImageFolder split, decoded and transformed by the pool while the trainer works on
 * earlier batches. Same (epoch, seed) -> same order and same augmentations, whichever worker
 * decodes which image. Unreadable files are skipped with a warning, never fatal.
 */
export class ImageFolderSource implements BatchSource {
  readonly batchSize: number;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly spec: TransformSpec;
  private readonly bad = new Map<string, string>();

  constructor(private readonly options: ImageFolderSourceOptions) {
    this.batchSize = options.batchSize;
    this.spec = options.spec;
    this.classNames = options.classNames;
    this.numClasses = options.classNames.length;
  }

  get size(): number {
    return shardSize(this.options.samples.length - this.bad.size, this.options.shard);
  }

  get skipped(): SkippedFile[] {
    return [...this.bad].map(([file, reason]) => ({ file, reason }));
  }

  async *batches(epoch: number, seed: number): AsyncIterable<Batch> {
    const { samples, spec, pool, batchSize } = this.options;
    const order = applyShard(
      (this.options.shuffle
        ? Rng.fromSeed(streamSeed(seed, epoch, STREAM_SHUFFLE)).permutation(samples.length)
        : samples.map((_, i) => i)
      ).filter((i) => !this.bad.has(samples[i]!.file)),
      this.options.shard,
    );
    const augmentSeed = streamSeed(seed, epoch, STREAM_AUGMENT);
    const starts: number[] = [];
    for (let s = 0; s < order.length; s += batchSize) starts.push(s);
    const submit = (s: number): Promise<DecodeResult[]> =>
      Promise.all(
        order.slice(s, s + batchSize).map((i) => pool.run(samples[i]!.file, spec, streamSeed(augmentSeed, i, 0))),
      );
    const ahead = Math.max(1, this.options.prefetchBatches ?? 2);
    const queue: Promise<DecodeResult[]>[] = [];
    let next = 0;
    while (queue.length < ahead && next < starts.length) queue.push(submit(starts[next++]!));
    for (let b = 0; b < starts.length; b++) {
      const results = await queue.shift()!;
      if (next < starts.length) queue.push(submit(starts[next++]!));
      const idx = order.slice(starts[b]!, starts[b]! + batchSize);
      const good: { data: Float32Array; label: number }[] = [];
      results.forEach((r, k) => {
        const sample = samples[idx[k]!]!;
        if (r.ok) good.push({ data: r.data, label: sample.label });
        else if (!this.bad.has(sample.file)) {
          this.bad.set(sample.file, r.reason);
          this.options.onSkip?.({ file: sample.file, reason: r.reason });
        }
      });
      if (good.length === 0) continue;
      const per = spec.crop * spec.crop * 3;
      const x = new Float32Array(good.length * per);
      const labels = new Int32Array(good.length);
      good.forEach((g, k) => {
        x.set(g.data, k * per);
        labels[k] = g.label;
      });
      yield { x, shape: [good.length, spec.crop, spec.crop, 3], labels };
    }
  }
}
