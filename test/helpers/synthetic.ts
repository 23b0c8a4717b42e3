import { ArrayBatchSource, Rng } from '@ferry/core';

/**
 * A small image task with real signal: class c has a colour blob whose hue and position depend on
 * c, on Gaussian noise. Learnable in a few epochs by a tiny CNN; chance level is 1/classes.
 */
export function syntheticImages(opts: { n: number; size: number; classes: number; seed: number; noise?: number }): {
  images: Float32Array;
  labels: Int32Array;
} {
  const { n, size, classes, seed } = opts;
  const noise = opts.noise ?? 0.6;
  const rng = Rng.fromSeed(seed);
  const images = new Float32Array(n * size * size * 3);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    labels[i] = c;
    const cy = ((c % 2) + 0.5) * (size / 2) + rng.uniform(-2, 2);
    const cx = ((Math.floor(c / 2) % 2) + 0.5) * (size / 2) + rng.uniform(-2, 2);
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) {
        const inside = (y - cy) ** 2 + (x - cx) ** 2 < (size / 4) ** 2 ? 1 : 0;
        for (let ch = 0; ch < 3; ch++) {
          const colour = inside * (ch === c % 3 ? 1.5 : -0.5);
          images[((i * size + y) * size + x) * 3 + ch] = colour + noise * rng.normal();
        }
      }
  }
  return { images, labels };
}

export function syntheticSources(opts: {
  train: number;
  val: number;
  size: number;
  classes: number;
  batchSize: number;
  seed: number;
}): {
  train: ArrayBatchSource;
  val: ArrayBatchSource;
} {
  const t = syntheticImages({ n: opts.train, size: opts.size, classes: opts.classes, seed: opts.seed });
  const v = syntheticImages({ n: opts.val, size: opts.size, classes: opts.classes, seed: opts.seed + 1 });
  return {
    train: new ArrayBatchSource(t.images, t.labels, [opts.size, opts.size, 3], opts.classes, {
      batchSize: opts.batchSize,
      shuffle: true,
    }),
    val: new ArrayBatchSource(v.images, v.labels, [opts.size, opts.size, 3], opts.classes, {
      batchSize: opts.batchSize,
      shuffle: false,
    }),
  };
}
