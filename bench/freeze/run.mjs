#!/usr/bin/env node
// bench/freeze: the three freezes against each other (freeze = the study's, BatchNorm in training
// mode; adapt = statistics adapted in one pass, then cached features; probe = source statistics,
// cached features), with finetune for context, on the demo in rgb and gray, every cell starting
// from a tiny ResNet pretrained on the demo's source domain. N seeds per cell; one JSON line per
// cell, then one summary line per strategy x color (mean/std of best val accuracy, wall time) and
// one per color comparing adapt and probe with freeze seed by seed.
// usage: node bench/freeze/run.mjs [--seeds 4] [--epochs 15] [--size 64] [--backend wasm]
//                                  [--strategies freeze,adapt,probe,finetune] [--dir DIR]
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CELL, runCell, selectBackend, writeDemoDataset, writeDemoSourceDataset } from '@ferry/core';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '4' },
    epochs: { type: 'string', default: '15' },
    size: { type: 'string', default: '64' },
    backend: { type: 'string', default: 'wasm' },
    strategies: { type: 'string', default: 'freeze,adapt,probe,finetune' },
    dir: { type: 'string' },
  },
});
const backend = await selectBackend(values.backend);
const dir = values.dir ?? mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-freeze-'));
const size = Number(values.size);
const target = path.join(dir, 'demo');
const source = path.join(dir, 'demo-source');
if (!existsSync(target)) await writeDemoDataset(target, { size });
if (!existsSync(source)) await writeDemoSourceDataset(source, { size });

// The demo's hyper-parameters (examples/demo.yaml).
const hyper = {
  ...DEFAULT_CELL,
  model: 'resnet_tiny',
  epochs: Number(values.epochs),
  batchSize: 16,
  lr: 0.02,
  lrStepEpochs: 7,
  imageSize: size,
};
const pretrainDir = path.join(dir, 'pretrain');
const t0 = performance.now();
const pre = await runCell(
  { ...hyper, dataset: source, weights: null, strategy: 'finetune', seed: 0 },
  { backend, outDir: pretrainDir },
);
const weights = path.join(pretrainDir, 'best.safetensors');
console.log(
  JSON.stringify({
    bench: 'freeze',
    phase: 'pretrain',
    dataset: 'demo-source',
    classes: pre.classes.length,
    best_val_accuracy: pre.bestValAccuracy,
    wall_s: +((performance.now() - t0) / 1000).toFixed(1),
  }),
);

const strategies = values.strategies.split(',');
const seeds = Array.from({ length: Number(values.seeds) }, (_, i) => i);
const results = [];
for (const color of ['rgb', 'gray']) {
  for (const strategy of strategies) {
    for (const seed of seeds) {
      const started = performance.now();
      const r = await runCell(
        { ...hyper, dataset: target, weights, color, strategy, seed },
        { backend, outDir: path.join(dir, 'cells', `${color}-${strategy}-s${seed}`), onWarning: () => undefined },
      );
      const row = {
        bench: 'freeze',
        color,
        strategy,
        seed,
        best_val_accuracy: r.bestValAccuracy,
        correct: Math.round(r.bestValAccuracy * r.valImages),
        val_images: r.valImages,
        best_epoch: r.bestEpoch,
        wall_s: +((performance.now() - started) / 1000).toFixed(2),
        feature_cache: r.featureCache.used,
        backend: backend.name,
      };
      results.push(row);
      console.log(JSON.stringify(row));
    }
  }
}

const meanStd = (xs) => {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean: +mean.toFixed(4), std: +std.toFixed(4) };
};
for (const color of ['rgb', 'gray']) {
  for (const strategy of strategies) {
    const rows = results.filter((r) => r.color === color && r.strategy === strategy);
    console.log(
      JSON.stringify({
        bench: 'freeze',
        summary: true,
        color,
        strategy,
        seeds: rows.length,
        accuracy: meanStd(rows.map((r) => r.best_val_accuracy)),
        correct: rows.map((r) => r.correct),
        wall_s: meanStd(rows.map((r) => r.wall_s)),
      }),
    );
  }
  // Same seed, same pretrained weights, same images: the per-seed difference against the study's freeze.
  const freeze = results.filter((r) => r.color === color && r.strategy === 'freeze');
  for (const other of strategies.filter((s) => s !== 'freeze')) {
    const rows = results.filter((r) => r.color === color && r.strategy === other);
    if (rows.length !== freeze.length || rows.length === 0) continue;
    const diffs = rows.map((r, i) => r.best_val_accuracy - freeze[i].best_val_accuracy);
    console.log(
      JSON.stringify({
        bench: 'freeze',
        versus: 'freeze',
        color,
        strategy: other,
        difference: meanStd(diffs),
        seeds: diffs.length,
      }),
    );
  }
}
