#!/usr/bin/env node
// One engine benchmark case in its own process (so peak RSS is this case's alone); prints one JSON line.
// usage: node bench/engine/case.mjs --backend wasm --model resnet18 --size 224 --batch 16 --mode train|inference|freeze|probe [--steps N] [--min-seconds S]
import { parseArgs } from 'node:util';
import { autoMicroBatch, selectBackend } from '@ferry/core';
import { trainingSetup } from './common.mjs';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    model: { type: 'string', default: 'resnet18' },
    size: { type: 'string', default: '224' },
    batch: { type: 'string', default: '16' },
    mode: { type: 'string', default: 'train' },
    steps: { type: 'string', default: '3' },
    'min-seconds': { type: 'string', default: '0' },
    classes: { type: 'string', default: '20' },
    micro: { type: 'string' },
  },
});
const size = Number(values.size);
const batch = Number(values.batch);
const classes = Number(values.classes);
const backend = await selectBackend(values.backend);
const strategy = values.mode === 'freeze' || values.mode === 'probe' ? { kind: values.mode } : { kind: 'finetune' };
const microBatch = values.micro ? Number(values.micro) : autoMicroBatch(backend.name, values.model, size, batch);
const { net, x, labels, shape, trainer } = trainingSetup({
  model: values.model,
  classes,
  size,
  batch,
  strategy,
  microBatch,
});
const step =
  values.mode === 'inference'
    ? () => net.predictArray(x, shape)
    : async () => trainer.trainStep({ x, shape, labels }, 0.001);

await step(); // warm-up: kernel set-up, momentum buffers
const minMs = Number(values['min-seconds']) * 1000;
let steps = 0;
const t0 = performance.now();
while (steps < Number(values.steps) || performance.now() - t0 < minMs) {
  await step();
  steps++;
}
const ms = performance.now() - t0;
console.log(
  JSON.stringify({
    engine: 'ferry',
    backend: backend.name,
    model: values.model,
    size,
    batch,
    mode: values.mode,
    micro_batch: values.mode === 'train' ? microBatch : null,
    steps,
    ms_per_step: +(ms / steps).toFixed(1),
    images_per_sec: +((batch * steps * 1000) / ms).toFixed(3),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
  }),
);
