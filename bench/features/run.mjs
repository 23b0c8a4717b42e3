#!/usr/bin/env node
// bench/features: wall time of a 15-epoch probe cell with the feature cache (backbone run once)
// against recomputing the frozen backbone every epoch. Same data, seed, model. JSON lines.
// usage: node bench/features/run.mjs [--model resnet18] [--size 112] [--per-class 50] [--epochs 15] [--backend wasm]
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CELL, runCell, selectBackend, writeDemoDataset } from '@ferry/core';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet18' },
    size: { type: 'string', default: '112' },
    'per-class': { type: 'string', default: '50' },
    epochs: { type: 'string', default: '15' },
    backend: { type: 'string', default: 'wasm' },
  },
});
const backend = await selectBackend(values.backend);
const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-features-'));
const perClass = Number(values['per-class']);
await writeDemoDataset(path.join(dir, 'data'), {
  trainPerClass: perClass,
  valPerClass: Math.ceil(perClass / 2),
  size: Number(values.size),
  seed: 0,
});
const cell = {
  ...DEFAULT_CELL,
  dataset: path.join(dir, 'data'),
  model: values.model,
  weights: null,
  strategy: 'probe',
  imageSize: Number(values.size),
  epochs: Number(values.epochs),
  batchSize: 16,
  augmentViews: 1,
};
const rows = {};
for (const [name, featureCache] of [
  ['recompute', false],
  ['cached', true],
]) {
  const t0 = performance.now();
  const r = await runCell({ ...cell, featureCache }, { backend, cacheDir: path.join(dir, 'cache') });
  rows[name] = {
    wall_s: +((performance.now() - t0) / 1000).toFixed(2),
    best_val_accuracy: r.bestValAccuracy,
    feature_ms: Math.round(r.featureCache.ms),
  };
  console.log(
    JSON.stringify({
      bench: 'features',
      mode: name,
      model: values.model,
      size: cell.imageSize,
      epochs: cell.epochs,
      images: r.trainImages + r.valImages,
      backend: backend.name,
      ...rows[name],
    }),
  );
}
console.log(JSON.stringify({ bench: 'features', speedup: +(rows.recompute.wall_s / rows.cached.wall_s).toFixed(1) }));
