import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  DEFAULT_ADVISE,
  DEFAULT_CELL,
  DecodePool,
  ImageFolderSource,
  Network,
  Rng,
  adaptBatchNorm,
  adviseDataset,
  batchNormShift,
  buildModel,
  gaussianHellinger,
  holdOut,
  knnAccuracy,
  nearestCentroidAccuracy,
  openImageFolder,
  runCell,
  selectBackend,
  studyTransforms,
  writeSafetensors,
  type AdviseConfig,
} from '@ferry/core';

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-advise-'));
let backend: { name: string; device: string };
beforeAll(async () => {
  backend = await selectBackend('wasm');
});

/** Clustered features: `classes` Gaussian blobs in `dim` dimensions (some overlap). */
function blobs(n: number, dim: number, classes: number, seed: number): { x: Float32Array; y: Int32Array } {
  const rng = Rng.fromSeed(seed);
  const centres = Array.from({ length: classes * dim }, () => rng.normal());
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % classes;
    for (let k = 0; k < dim; k++) x[i * dim + k] = centres[y[i]! * dim + k]! + 1.2 * rng.normal();
  }
  return { x, y };
}

describe('advisor measurements (pure)', () => {
  test('the held-out part is stratified, seeded and disjoint from the fitted part', () => {
    const labels = [...Array.from({ length: 20 }, () => 0), ...Array.from({ length: 8 }, () => 1), 2, 2];
    const a = holdOut(labels, 3, 0.25, 0);
    expect(holdOut(labels, 3, 0.25, 0)).toEqual(a);
    expect(a.test.map((i) => labels[i])).toEqual([0, 0, 0, 0, 0, 1, 1, 2]);
    expect(new Set([...a.fit, ...a.test]).size).toBe(labels.length);
    expect(holdOut(labels, 3, 0.25, 1).test).not.toEqual(a.test);
  });

  test("nearest centroid and k-NN accuracies equal numpy's float64 computation", () => {
    const { x, y } = blobs(90, 16, 3, 7);
    const split = holdOut(y, 3, 0.3, 0);
    const script = `
import json, sys, numpy as np
d = json.load(open(sys.argv[1]))
x = np.array(d['x'], dtype=np.float64).reshape(-1, d['dim']); y = np.array(d['y'])
fit, test = np.array(d['fit']), np.array(d['test'])
u = x / np.linalg.norm(x, axis=1, keepdims=True)
cent = np.stack([u[fit][y[fit] == c].sum(0) for c in range(d['classes'])])
cent /= np.linalg.norm(cent, axis=1, keepdims=True)
nc = (np.argmax(u[test] @ cent.T, axis=1) == y[test]).mean()
sims = u[test] @ u[fit].T
knn = []
for row in sims:
    top = np.argsort(-row, kind='stable')[:d['k']]
    votes = np.bincount(y[fit][top], minlength=d['classes'])
    best = [c for c in range(d['classes']) if votes[c] == votes.max()]
    near = {c: max(row[j] for j in top if y[fit][j] == c) for c in best}
    knn.append(max(best, key=lambda c: (near[c], -c)))
print(json.dumps({'nc': nc, 'knn': float((np.array(knn) == y[test]).mean())}))
`;
    const dir = tmp();
    writeFileSync(path.join(dir, 'ref.py'), script);
    const input = { x: [...x], y: [...y], dim: 16, classes: 3, fit: split.fit, test: split.test, k: 5 };
    writeFileSync(path.join(dir, 'in.json'), JSON.stringify(input));
    const ref = JSON.parse(
      execFileSync('/usr/bin/python3', [path.join(dir, 'ref.py'), path.join(dir, 'in.json')], { encoding: 'utf8' }),
    ) as { nc: number; knn: number };
    const nc = nearestCentroidAccuracy(x, 16, y, 3, split);
    const knn = knnAccuracy(x, 16, y, 3, split, 5);
    expect(nc).toBeCloseTo(ref.nc, 12);
    expect(knn).toBeCloseTo(ref.knn, 12);
    expect(nc).toBeGreaterThan(0.5); // the blobs are separable enough for the comparison to mean something
  });

  test('the Hellinger distance of Gaussians: 0 for equal ones, the closed form, monotone in the shift', () => {
    expect(gaussianHellinger(1, 2, 1, 2)).toBe(0);
    // The variances carry BatchNorm's eps (1e-5), as the layers normalise with. Equal variances:
    // H^2 = 1 - exp(-d^2 / (8 v)).
    const v = 1 + 1e-5;
    expect(gaussianHellinger(0, 1, 2, 1) ** 2).toBeCloseTo(1 - Math.exp(-4 / (8 * v)), 12);
    const shifts = [0, 0.5, 1, 2, 4].map((d) => gaussianHellinger(0, 1, d, 1));
    for (let i = 1; i < shifts.length; i++) expect(shifts[i]!).toBeGreaterThan(shifts[i - 1]!);
    // Equal means: H^2 = 1 - sqrt(2 s1 s2 / (v1 + v2)).
    const [v1, v2] = [1 + 1e-5, 9 + 1e-5];
    expect(gaussianHellinger(0, 1, 0, 9)).toBeCloseTo(
      Math.sqrt(1 - Math.sqrt((2 * Math.sqrt(v1 * v2)) / (v1 + v2))),
      12,
    );
    expect(gaussianHellinger(0, 1, 100, 1)).toBeCloseTo(1, 12);
    const layer = { name: 'bn1', targetMean: [0, 1], targetVar: [1, 1], sourceMean: [0, 1], sourceVar: [1, 1] };
    expect(batchNormShift([layer]).shift).toBe(0);
    expect(batchNormShift([layer, { ...layer, name: 'bn2', targetMean: [2, 3] }]).shift).toBeCloseTo(
      gaussianHellinger(0, 1, 2, 1) / 2,
      10,
    );
  });
});

/** Three classes of 32 px patterns; `offset` brightens every pixel (a shifted domain). */
async function writeShapes(root: string, offset: number, perClass: number): Promise<void> {
  const size = 32;
  for (const [split, n] of [
    ['train', perClass],
    ['val', 2],
  ] as const) {
    for (let c = 0; c < 3; c++) {
      const dir = path.join(root, split, `class${c}`);
      mkdirSync(dir, { recursive: true });
      for (let i = 0; i < n; i++) {
        const rng = Rng.fromSeed(1000 * c + i + (split === 'val' ? 500 : 0));
        const px = Buffer.alloc(size * size * 3);
        for (let p = 0; p < size * size; p++) {
          const [u, v] = [p % size, Math.floor(p / size)];
          const base = c === 0 ? u * 6 : c === 1 ? v * 6 : ((u >> 2) + (v >> 2)) % 2 ? 180 : 40;
          for (let ch = 0; ch < 3; ch++)
            px[p * 3 + ch] = Math.max(0, Math.min(255, base * (0.6 + 0.2 * ch) + 25 * rng.normal() + offset));
        }
        await sharp(px, { raw: { width: size, height: size, channels: 3 } })
          .png()
          .toFile(path.join(dir, `${i}.png`));
      }
    }
  }
}

describe('advisor on a network (resnet_tiny, wasm)', () => {
  let dir = '';
  let weights = '';
  const config = (dataset: string): AdviseConfig => ({
    ...DEFAULT_ADVISE,
    dataset,
    model: 'resnet_tiny',
    weights,
    imageSize: 32,
    batchSize: 16,
  });
  beforeAll(async () => {
    dir = tmp();
    await Promise.all([0, 40, 90].map((o) => writeShapes(path.join(dir, `shift${o}`), o, 16)));
    // The "source": resnet_tiny whose BatchNorm statistics are those of shift0's training images.
    const folder = await openImageFolder(path.join(dir, 'shift0'));
    const model = buildModel('resnet_tiny', 3);
    const net = Network.create(model, { seed: 0 });
    const pool = new DecodePool(2);
    const source = new ImageFolderSource({
      samples: folder.train,
      classNames: folder.classes,
      spec: studyTransforms(32).val,
      batchSize: 48,
      shuffle: true,
      pool,
    });
    await adaptBatchNorm(net, source, model.stages.length - 1, { seed: 0 });
    await pool.close();
    weights = path.join(dir, 'source.safetensors');
    writeFileSync(weights, writeSafetensors(await net.exportState()));
    net.dispose();
  });
  afterAll(() => undefined);

  test('the BatchNorm shift is about 0 on the source distribution and grows with a brightness shift', async () => {
    const before = tf.memory().numTensors;
    const shifts: number[] = [];
    for (const o of [0, 40, 90])
      shifts.push((await adviseDataset(config(path.join(dir, `shift${o}`)), { backend })).domain.shift);
    expect(shifts[0]!).toBeLessThan(0.05);
    expect(shifts[1]!).toBeGreaterThan(shifts[0]! + 0.03);
    expect(shifts[2]!).toBeGreaterThan(shifts[1]! + 0.03);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('advise writes the features a probe cell (augmentViews 0) reads from the cache, and reads them back itself', async () => {
    const cacheDir = tmp();
    const dataset = path.join(dir, 'shift40');
    const first = await adviseDataset(config(dataset), { backend, cacheDir });
    expect(first.featureCache.hit).toBe(false);
    expect(first.advice.heuristic).toBe(true);
    const second = await adviseDataset(config(dataset), { backend, cacheDir });
    expect(second.featureCache).toMatchObject({ hit: true, key: first.featureCache.key });
    expect(second.frozen).toEqual(first.frozen);
    expect(second.domain.shift).toBeCloseTo(first.domain.shift, 12);
    const cell = await runCell(
      {
        ...DEFAULT_CELL,
        dataset,
        model: 'resnet_tiny',
        weights,
        strategy: 'probe',
        seed: 3, // the val transform's features do not depend on the seed
        epochs: 1,
        batchSize: 16,
        imageSize: 32,
        augmentViews: 0,
      },
      { backend, cacheDir, outDir: path.join(tmp(), 'cell') },
    );
    expect(cell.featureCache).toMatchObject({ used: true, hits: 1, misses: 1 }); // train from advise; val computed
  });

  test('a class with fewer than 2 training images cannot be held out: a dataset error naming it', async () => {
    const small = path.join(dir, 'small');
    await writeShapes(small, 0, 1);
    await expect(adviseDataset(config(small), { backend })).rejects.toMatchObject({
      code: 'FERRY_ERR_DATASET',
      message: expect.stringMatching(/too few training images.*"class0"/),
    });
  });
});
