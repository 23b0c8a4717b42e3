#!/usr/bin/env node
// bench/data: decode + transform images/s (train and val transforms at 224, rgb and gray) per
// worker-thread count, on generated photo-like JPEGs (500x375, like Dogs vs Cats). JSON lines.
// usage: node bench/data/run.mjs [--images 256] [--threads 1,2]
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { DecodePool, Rng, studyTransforms } from '@ferry/core';

const { values } = parseArgs({ options: { images: { type: 'string', default: '256' }, threads: { type: 'string' } } });
const n = Number(values.images);
const threadsList = values.threads
  ? values.threads.split(',').map(Number)
  : [...new Set([1, 2, os.availableParallelism()])];
const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-data-'));
const files = [];
for (let i = 0; i < n; i++) {
  const rng = Rng.fromSeed(i);
  const w = 500;
  const h = 375;
  const buf = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) buf[(y * w + x) * 3 + c] = (x * (c + 1) + y * (3 - c) + rng.int(40)) & 255;
  const f = path.join(dir, `${i}.jpg`);
  await sharp(buf, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 90 })
    .toFile(f);
  files.push(f);
}
for (const threads of threadsList) {
  const pool = new DecodePool(threads);
  for (const color of ['rgb', 'gray']) {
    for (const kind of ['train', 'val']) {
      const spec = studyTransforms(224, color)[kind];
      await Promise.all(files.slice(0, threads * 2).map((f, i) => pool.run(f, spec, i))); // warm-up
      const t0 = performance.now();
      const results = await Promise.all(files.map((f, i) => pool.run(f, spec, i)));
      const ms = performance.now() - t0;
      const failed = results.filter((r) => !r.ok).length;
      console.log(
        JSON.stringify({
          bench: 'data',
          threads,
          color,
          transform: kind,
          size: 224,
          source: '500x375 jpeg',
          images: n,
          failed,
          images_per_sec: +((n * 1000) / ms).toFixed(1),
        }),
      );
    }
  }
  await pool.close();
}
