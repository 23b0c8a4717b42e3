import { mkdtempSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { writeDemoDataset } from '@ferry/core';
import { ADVICE_NOTE, type Advice } from '@ferry/common';
import { ferry } from '../../../test/helpers/cli.js';
import { writeJpeg } from '../../../test/helpers/images.js';

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-cli-advise-'));

let demo = '';
beforeAll(async () => {
  demo = path.join(tmp(), 'demo');
  await writeDemoDataset(demo, { trainPerClass: 16, valPerClass: 4, size: 32, seed: 2 });
});

describe('ferry advise', () => {
  test('prints the measurements, the reasoning line by line and the prediction, says it is a heuristic; --json parses and the features are cached', async () => {
    const cache = tmp();
    const args = ['advise', '-d', demo, '-m', 'resnet_tiny', '--weights', 'none', '--size', '32', '--backend', 'wasm'];
    const started = performance.now();
    const text = await ferry(args, { FERRY_CACHE: cache });
    expect(performance.now() - started).toBeLessThan(30_000);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('dataset: 4 classes, 64 training images');
    expect(text.stdout).toContain('images per class: min 16, median 16, max 16');
    expect(text.stdout).toMatch(/16 held-out images \(fitted on 48\): nearest centroid \d+\.\d%, 5-NN \d+\.\d%/);
    expect(text.stdout).toMatch(/BatchNorm shift from the source domain: 0\.\d{3} \((close|moderate|far);/);
    expect(text.stdout).toMatch(/^ {2}domain +[+-]?\d+ +0\.\d{3} BatchNorm shift/m);
    expect(text.stdout).toMatch(/^prediction: (finetune wins|freeze wins|about equal)/m);
    expect(text.stdout).toContain(ADVICE_NOTE);
    expect(text.stderr).toMatch(/frozen features: 64\/64 images/);
    expect(readdirSync(path.join(cache, 'features')).some((f) => f.endsWith('.f32'))).toBe(true);
    const json = await ferry([...args, '--json'], { FERRY_CACHE: cache });
    expect(json.code).toBe(0);
    const r = JSON.parse(json.stdout) as { advice: Advice; featureCache: { hit: boolean }; classes: string[] };
    expect(r.featureCache.hit).toBe(true);
    expect(r.advice.heuristic).toBe(true);
    expect(r.advice.note).toBe(ADVICE_NOTE);
    expect(['finetune', 'freeze', 'about equal']).toContain(r.advice.winner);
    expect(r.classes).toHaveLength(4);
    // A sample per class: its own cache entry, images per class still counted on all.
    const sample = await ferry([...args, '--per-class', '4', '--json'], { FERRY_CACHE: cache });
    const s = JSON.parse(sample.stdout) as {
      measuredImages: number;
      trainImages: number;
      featureCache: { hit: boolean };
    };
    expect(s).toMatchObject({ measuredImages: 16, trainImages: 64, featureCache: { hit: false } });
  });

  test('bad input exits 2 with the reason: a missing folder, an unknown model, a class too small to hold out', async () => {
    const missing = await ferry(['advise', '-d', path.join(tmp(), 'nope'), '-m', 'resnet_tiny', '--weights', 'none']);
    expect([missing.code, missing.stderr]).toEqual([2, expect.stringMatching(/does not exist.*FERRY_ERR_DATASET/s)]);
    const model = await ferry(['advise', '-d', demo, '-m', 'resnet19']);
    expect([model.code, model.stderr]).toEqual([2, expect.stringContaining('unknown model "resnet19"')]);
    const small = tmp();
    for (const [split, cls, n] of [
      ['train', 'a', 3],
      ['train', 'b', 1],
      ['val', 'a', 1],
      ['val', 'b', 1],
    ] as const) {
      mkdirSync(path.join(small, split, cls), { recursive: true });
      for (let i = 0; i < n; i++) await writeJpeg(path.join(small, split, cls, `${i}.jpg`), 16, 16, i);
    }
    const few = await ferry(['advise', '-d', small, '-m', 'resnet_tiny', '--weights', 'none', '--size', '16']);
    expect(few.code).toBe(2);
    expect(few.stderr).toContain('too few training images to hold any out: "b" has fewer than 2');
    expect(few.stderr).not.toContain('    at ');
  });
});
