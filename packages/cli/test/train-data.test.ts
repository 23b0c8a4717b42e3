import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  DEFAULT_CELL,
  DEMO_CLASSES,
  DEMO_SOURCE_CLASSES,
  runCell,
  selectBackend,
  writeDemoDataset,
  writeDemoSourceDataset,
  type CellResult,
} from '@ferry/core';
import type { ResultsTable } from '@ferry/common';
import { ferry } from '../../../test/helpers/cli.js';
import { writeJpeg } from '../../../test/helpers/images.js';
import { roundingTolerance } from '../../../test/helpers/rounding-twin.js';

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-cli-'));
const count = (dir: string): number => (existsSync(dir) ? readdirSync(dir).length : 0);

let demo = '';
beforeAll(async () => {
  demo = path.join(tmp(), 'demo');
  await writeDemoDataset(demo, { trainPerClass: 24, valPerClass: 8, size: 32, seed: 1 });
});

describe('ferry train', () => {
  test("trains one cell with the study's flags, prints the epoch table, writes result.json and curves; a rerun resumes", async () => {
    const out = path.join(tmp(), 'run');
    const cache = tmp();
    const args = [
      'train',
      '-d',
      demo,
      '-m',
      'resnet_tiny',
      '--size',
      '32',
      '-b',
      '16',
      '-e',
      '3',
      '-lr',
      '0.02',
      '-lre',
      '2',
      '-lrs',
      '0.5',
      '-f',
      '1',
      '--backend',
      'wasm',
      '--out',
      out,
    ];
    const r = await ferry(args, { FERRY_CACHE: cache });
    expect(r.stderr).not.toContain('unexpected');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/EPOCH\s+LR\s+TRAIN LOSS/);
    expect(r.stdout).toMatch(/best val accuracy \d+\.\d% at epoch \d/);
    const result = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')) as CellResult;
    expect(result.epochs.map((e) => e.lr)).toEqual([0.02, 0.02, 0.01]);
    expect(result.config).toMatchObject({
      model: 'resnet_tiny',
      strategy: 'finetune',
      epochs: 3,
      batchSize: 16,
      lrGamma: 0.5,
      lrStepEpochs: 2,
    });
    expect(result.classes).toEqual(['green_circle', 'green_square', 'red_circle', 'red_square']);
    expect(result.confusion.flat().reduce((a, b) => a + b, 0)).toBe(32);
    expect(result.backend).toBe('wasm');
    // The curves drawn by the dashboard's chart code (uPlot inlined): loss and accuracy, train and val.
    const curves = readFileSync(path.join(out, 'curves.html'), 'utf8');
    expect(curves).not.toMatch(/<script[^>]* src=|src="http|href="http/);
    expect(curves.match(/data-chart="/g)).toHaveLength(2);
    expect(existsSync(path.join(out, 'best.safetensors'))).toBe(true);

    const again = await ferry(args, { FERRY_CACHE: cache });
    expect(again.code).toBe(0);
    const second = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')) as CellResult;
    expect(second.resumedFromEpoch).toBe(3);
    expect(second.bestValAccuracy).toBe(result.bestValAccuracy);
  });

  test('mistakes a user makes get a clear error and exit 2: a missing folder, one class, a missing sweep file', async () => {
    const missing = await ferry(['data', 'stats', path.join(tmp(), 'nope')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no such folder');
    expect(missing.stderr).toContain('FERRY_ERR_DATASET');
    const one = tmp();
    for (const split of ['train', 'val'])
      for (let i = 0; i < 2; i++) await writeJpeg(path.join(one, split, 'only', `${i}.jpg`), 16, 16, i);
    const single = await ferry([
      'train',
      '-d',
      one,
      '-m',
      'resnet_tiny',
      '--size',
      '16',
      '-e',
      '1',
      '--backend',
      'cpu',
      '--out',
      path.join(tmp(), 'o'),
    ]);
    expect(single.code).toBe(2);
    expect(single.stderr).toContain('has 1 class (only); a classifier needs at least 2 class folders');
    expect(single.stderr).not.toContain('    at ');
    const sweepFile = path.join(tmp(), 'missing.yaml');
    for (const cmd of [
      ['run', sweepFile],
      ['sweep', 'submit', sweepFile, '--coordinator', '127.0.0.1:1'],
    ]) {
      const r = await ferry(cmd);
      expect(r.code, cmd.join(' ')).toBe(2);
      expect(r.stderr, cmd.join(' ')).toMatch(/cannot read .*missing\.yaml/);
      expect(r.stderr).not.toContain('    at ');
    }
    const unreachable = await ferry(['sweep', 'status', 'x', '--coordinator', '127.0.0.1:1']);
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr).toContain('coordinator at 127.0.0.1:1 cannot be reached');
    expect(unreachable.stderr).toContain('[FERRY_ERR_UNAVAILABLE]');
    expect(unreachable.stderr).not.toContain('Resolution note');
    // A token never crosses the network in clear text unless asked to.
    const clear = await ferry(['sweep', 'status', 'x', '--coordinator', '10.0.0.1:7070', '--token', 'secret']);
    expect(clear.code).toBe(2);
    expect(clear.stderr).toContain('the token would cross the network in clear text; pass --tls-ca');
  });

  test('bad flags are refused with the reason', async () => {
    expect((await ferry(['train', '-d', demo, '-f', '2'])).stderr).toContain('-f must be 1 (finetune) or 0 (freeze)');
    expect(
      (await ferry(['train', '-d', demo, '-m', 'resnet18', '--weights', 'pretrained'], { FERRY_CACHE: tmp() })).stderr,
    ).toContain('ferry weights pull resnet18');
    const missing = await ferry(['train', '-d', path.join(demo, 'nope'), '-m', 'resnet_tiny', '--backend', 'cpu']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('FERRY_ERR_DATASET');
  });
});

describe('feature cache for probe and adapt', () => {
  test.each(['probe', 'adapt'])(
    '%s: cached features give the same val accuracy as recomputing the backbone, and the second run hits the cache',
    async (strategy) => {
      const backend = await selectBackend('wasm');
      const base = {
        ...DEFAULT_CELL,
        dataset: demo,
        model: 'resnet_tiny',
        weights: null,
        strategy,
        imageSize: 32,
        epochs: 3,
        batchSize: 16,
        lr: 0.05,
        augmentViews: 0,
        seed: 4,
      };
      const cacheDir = tmp();
      const cached = await runCell({ ...base, featureCache: true }, { backend, cacheDir });
      const plain = await runCell({ ...base, featureCache: false }, { backend });
      expect(cached.featureCache).toMatchObject({ used: true, hits: 0, misses: 2 });
      expect(plain.featureCache.used).toBe(false);
      expect(cached.bestValAccuracy).toBe(plain.bestValAccuracy);
      // The same steps on the same features: a feature computed in another batch may round
      // differently (a kernel's tiling can depend on the batch), so each epoch's loss must agree to
      // a few float32 roundings (the rounding floor and factor of test/helpers/torch-ref.ts).
      cached.epochs.forEach((e, i) => {
        const want = plain.epochs[i]!.trainLoss;
        expect(Math.abs(e.trainLoss - want) / want, `epoch ${i}`).toBeLessThan(roundingTolerance(0));
      });
      const again = await runCell({ ...base, featureCache: true }, { backend, cacheDir });
      expect(again.featureCache).toMatchObject({ hits: 2, misses: 0 });
      expect(again.bestValAccuracy).toBe(cached.bestValAccuracy);
    },
  );
});

describe('scratch', () => {
  test('trains every layer from random initialisation: weights the cell names are not loaded (said), the run is finetune from no weights', async () => {
    const backend = await selectBackend('wasm');
    const base = {
      ...DEFAULT_CELL,
      dataset: demo,
      model: 'resnet_tiny',
      imageSize: 32,
      epochs: 1,
      batchSize: 16,
      lr: 0.05,
      augmentViews: 0,
      seed: 6,
    };
    const warnings: string[] = [];
    const onWarning = (m: string): number => warnings.push(m);
    // A file that does not exist: loading it would fail the cell.
    const missing = path.join(tmp(), 'never-read.safetensors');
    const scratch = await runCell({ ...base, strategy: 'scratch', weights: missing }, { backend, onWarning });
    const finetune = await runCell({ ...base, strategy: 'finetune', weights: null }, { backend });
    expect(warnings).toContain(`strategy scratch starts from random weights; ${missing} is not loaded`);
    expect(scratch.config.weights).toBeNull();
    expect(scratch.bestValAccuracy).toBe(finetune.bestValAccuracy);
    expect(scratch.epochs.map((e) => e.trainLoss)).toEqual(finetune.epochs.map((e) => e.trainLoss));
  });
});

describe('frozen BatchNorm and the feature cache', () => {
  test("the cache key holds the frozen stages' BatchNorm statistics: adapt after probe recomputes, freeze (training mode) caches nothing", async () => {
    const backend = await selectBackend('wasm');
    const base = {
      ...DEFAULT_CELL,
      dataset: demo,
      model: 'resnet_tiny',
      weights: null,
      imageSize: 32,
      epochs: 2,
      batchSize: 16,
      lr: 0.05,
      augmentViews: 1,
      seed: 5,
    };
    const cacheDir = tmp();
    const probe = await runCell({ ...base, strategy: 'probe' }, { backend, cacheDir });
    expect(probe.featureCache).toMatchObject({ used: true, hits: 0, misses: 2 });
    const adapt = await runCell({ ...base, strategy: 'adapt' }, { backend, cacheDir });
    expect(adapt.featureCache).toMatchObject({ used: true, hits: 0, misses: 2 });
    const adaptAgain = await runCell({ ...base, strategy: 'adapt' }, { backend, cacheDir });
    expect(adaptAgain.featureCache).toMatchObject({ used: true, hits: 2, misses: 0 });
    expect(adaptAgain.epochs.map((e) => e.valLoss)).toEqual(adapt.epochs.map((e) => e.valLoss));
    const freeze = await runCell({ ...base, strategy: 'freeze' }, { backend, cacheDir });
    expect(freeze.featureCache.used).toBe(false);
  });
});

describe('ferry data', () => {
  test('demo --source writes the 4-class target and the 8-class source domain', async () => {
    const dest = path.join(tmp(), 'demo');
    const source = path.join(tmp(), 'demo-source');
    const r = await ferry([
      'data',
      'demo',
      dest,
      '--source',
      source,
      '--train-per-class',
      '2',
      '--val-per-class',
      '1',
      '--size',
      '16',
    ]);
    expect(r.code).toBe(0);
    expect(readdirSync(path.join(dest, 'train')).sort()).toEqual([
      'green_circle',
      'green_square',
      'red_circle',
      'red_square',
    ]);
    expect(readdirSync(path.join(source, 'train')).sort()).toEqual([...DEMO_SOURCE_CLASSES].sort());
    expect(DEMO_SOURCE_CLASSES.filter((c) => (DEMO_CLASSES as readonly string[]).includes(c))).toEqual([]);
    expect(count(path.join(source, 'val', 'blue_ring'))).toBe(1);
    expect(r.stdout).toContain('the source domain: 8 classes');
  });

  test('split is stratified and deterministic, and refuses a non-empty destination', async () => {
    const src = tmp();
    for (const c of ['a', 'b']) for (let i = 0; i < 10; i++) await writeJpeg(path.join(src, c, `${i}.jpg`), 16, 16, i);
    const d1 = path.join(tmp(), 'x');
    const d2 = path.join(tmp(), 'y');
    expect((await ferry(['data', 'split', src, d1, '--val', '0.3', '--seed', '2'])).stdout).toContain(
      '2 classes, 14 train / 6 val',
    );
    await ferry(['data', 'split', src, d2, '--val', '0.3', '--seed', '2']);
    expect(readdirSync(path.join(d1, 'val', 'a'))).toEqual(readdirSync(path.join(d2, 'val', 'a')));
    expect(count(path.join(d1, 'val', 'b'))).toBe(3);
    const again = await ferry(['data', 'split', src, d1]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('not empty');
  });

  test("import reads the study's raw layouts", async () => {
    const raw = tmp();
    // Dogs vs Cats: flat train/cat.N.jpg, dog.N.jpg
    for (let i = 0; i < 5; i++) {
      await writeJpeg(path.join(raw, 'dvc', 'train', `cat.${i}.jpg`), 12, 12, i);
      await writeJpeg(path.join(raw, 'dvc', 'train', `dog.${i}.jpg`), 12, 12, i + 9);
    }
    const dvc = await ferry(['data', 'import', 'dogs-vs-cats', path.join(raw, 'dvc'), path.join(raw, 'out-dvc')]);
    expect(dvc.stdout).toContain('2 classes, 8 train / 2 val');
    // Simpsons: the 20 characters with the most images, out of 22.
    for (let c = 0; c < 22; c++)
      for (let i = 0; i < 2 + (c % 3 === 0 ? 3 : 0) + (c < 20 ? 1 : 0); i++)
        await writeJpeg(
          path.join(raw, 's', 'simpsons_dataset', `char${String(c).padStart(2, '0')}`, `pic_${i}.jpg`),
          8,
          8,
          i,
        );
    const simp = await ferry(['data', 'import', 'simpsons', path.join(raw, 's'), path.join(raw, 'out-s')]);
    expect(simp.stdout).toContain('20 classes');
    expect(readdirSync(path.join(raw, 'out-s', 'train'))).not.toContain('char20');
    // Caltech 256: 256_ObjectCategories/001.ak47/001_0001.jpg
    for (const c of ['001.ak47', '257.clutter'])
      for (let i = 1; i <= 5; i++)
        await writeJpeg(path.join(raw, 'c', '256_ObjectCategories', c, `${c.slice(0, 3)}_000${i}.jpg`), 8, 8, i);
    const cal = await ferry(['data', 'import', 'caltech256', path.join(raw, 'c'), path.join(raw, 'out-c')]);
    expect(cal.stdout).toContain('2 classes, 8 train / 2 val');
    const bad = await ferry(['data', 'import', 'mnist', raw, path.join(raw, 'z')]);
    expect(bad.stderr).toContain('unknown dataset kind');
  });

  test('stats lists classes, counts, sizes and unreadable files; gray makes PIL L copies', async () => {
    const root = tmp();
    await writeJpeg(path.join(root, 'train', 'a', '1.jpg'), 40, 30, 1);
    await writeJpeg(path.join(root, 'train', 'b', '1.jpg'), 300, 200, 2);
    await writeJpeg(path.join(root, 'val', 'a', '1.jpg'), 20, 20, 3);
    mkdirSync(path.join(root, 'val', 'b'), { recursive: true });
    writeFileSync(path.join(root, 'val', 'b', 'bad.jpg'), 'junk');
    const s = JSON.parse((await ferry(['data', 'stats', root, '--json'])).stdout) as {
      classes: string[];
      counts: Record<string, Record<string, number>>;
      sizes: { maxWidth: number; minHeight: number };
      unreadable: { file: string }[];
    };
    expect(s.classes).toEqual(['a', 'b']);
    expect(s.counts['val']).toEqual({ a: 1, b: 1 });
    expect(s.sizes.maxWidth).toBe(300);
    expect(s.sizes.minHeight).toBe(20);
    expect(s.unreadable.map((u) => path.basename(u.file))).toEqual(['bad.jpg']);

    const gray = path.join(tmp(), 'g');
    const g = await ferry(['data', 'gray', root, gray]);
    expect(g.stdout).toContain('3 grayscale images, 1 skipped');
    const meta = await sharp(path.join(gray, 'train', 'b', '1.jpg')).metadata();
    expect(meta.channels).toBe(1);
  });

  describe('pull (against a local HTTP server)', () => {
    let server: Server;
    let url = '';
    let zip: Buffer;
    beforeAll(async () => {
      const dir = tmp();
      for (const split of ['train', 'val'])
        for (const c of ['ants', 'bees'])
          for (let i = 0; i < 2; i++)
            await writeJpeg(path.join(dir, 'hymenoptera_data', split, c, `${i}.jpg`), 10, 10, i);
      execFileSync('/usr/bin/python3', [
        '-c',
        'import shutil,sys; shutil.make_archive(sys.argv[1], "zip", sys.argv[2], "hymenoptera_data")',
        path.join(dir, 'h'),
        dir,
      ]);
      zip = readFileSync(path.join(dir, 'h.zip'));
      server = createServer((_req, res) => {
        res.writeHead(200, { 'content-length': String(zip.length) });
        res.end(zip);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const a = server.address();
      url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/hymenoptera_data.zip`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    test('downloads, records the digest, extracts and imports; later pulls are checked against it', async () => {
      const cache = tmp();
      const dest = path.join(tmp(), 'hym');
      const r = await ferry(['data', 'pull', 'hymenoptera', dest, '--url', url, '--cache', cache]);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain('no pinned SHA-256');
      expect(r.stdout).toContain('2 classes, 4 train / 4 val');
      const digest = createHash('sha256').update(zip).digest('hex');
      expect(readFileSync(path.join(cache, 'datasets', 'hymenoptera_data.zip.sha256'), 'utf8').trim()).toBe(digest);
      const again = await ferry([
        'data',
        'pull',
        'hymenoptera',
        path.join(tmp(), 'h2'),
        '--url',
        url,
        '--cache',
        cache,
      ]);
      expect(again.stderr).toContain('cached');
      expect(again.stderr).not.toContain('no pinned');
      const wrong = await ferry([
        'data',
        'pull',
        'hymenoptera',
        path.join(tmp(), 'h3'),
        '--url',
        url,
        '--cache',
        tmp(),
        '--sha256',
        'ab'.repeat(32),
      ]);
      expect(wrong.code).toBe(2);
      expect(wrong.stderr).toContain('checksum mismatch');
    });
  });
});

describe('ferry run (the embedded default: coordinator and workers as child processes)', () => {
  test('runs every cell, prints the comparison table, and a rerun re-runs nothing', async () => {
    const root = path.dirname(demo);
    const sweep = path.join(tmp(), 'tiny.yaml');
    writeFileSync(
      sweep,
      `name: tiny
datasets: [{ name: demo, path: ${path.basename(demo)} }]
colors: [rgb]
strategies: [finetune, freeze]
models: [resnet_tiny]
hyper: { weights: none, epochs: 2, batchSize: 16, lr: 0.02, imageSize: 32 }
`,
    );
    const out = path.join(tmp(), 'runs');
    const args = [
      'run',
      sweep,
      '--data-root',
      root,
      '--out',
      out,
      '--backend',
      'wasm',
      '--workers',
      '2',
      '--dashboard-port',
      '0',
    ];
    const first = await ferry(args, { FERRY_CACHE: tmp() });
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/\| dataset \| color \| finetune \| freeze \| verdict \| advisor \(heuristic\) \|/);
    // The advisor's prediction for the row, computed during the run (random weights: it says so).
    expect(first.stderr).toMatch(
      /^advisor: demo rgb from none: (finetune [+-]\d+|freeze -\d+|about equal) \(-?\d+ to -?\d+\), a heuristic \(random weights: it means little\)$/m,
    );
    expect(first.stdout).toMatch(
      /^- advisor \(heuristic\): .*the advisor agreed with the verdict on [01] of 1 row\.$/m,
    );
    expect(first.stdout).toMatch(
      /\| demo \| rgb \| \**\d+\.\d% \[\d+\.\d, \d+\.\d\]\** \| \**\d+\.\d% \[\d+\.\d, \d+\.\d\]\** \| (finetune|freeze|no significant difference) \(McNemar p [=<] [\d.]+\) \|/,
    );
    type Cells = {
      table: ResultsTable;
      cells: {
        state: string;
        attempts: number;
        result: { bestValAccuracy: number; valPredictions: number[]; valLabels: number[] } | null;
      }[];
    };
    const json = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as Cells;
    // Per-image predictions crossed worker -> coordinator -> CLI and decided the verdict.
    expect(json.cells[0]!.result!.valPredictions).toHaveLength(json.cells[0]!.result!.valLabels.length);
    expect(json.table.rows[0]!.comparison).toMatchObject({
      a: expect.any(String),
      test: 'mcnemar-exact',
      pairedSeeds: 1,
    });
    expect(json.table.rows[0]!.byStrategy['finetune']!.ci95).toHaveLength(2);
    expect(json.table.rows[0]!.advice!.advice.heuristic).toBe(true);
    expect(json.table.advisor).toMatchObject({ rows: 1, compared: 1 });
    expect(json.cells.map((c) => [c.state, c.attempts])).toEqual([
      ['done', 1],
      ['done', 1],
    ]);
    expect(count(path.join(out, 'workers'))).toBeGreaterThanOrEqual(2);
    // The shareable report: self-contained (scripts inline, no external reference), the same verdict,
    // one chart (the dashboard's chart code) of the row's two cells.
    const html = readFileSync(path.join(out, 'results.html'), 'utf8');
    expect(html).toContain(json.table.rows[0]!.verdict.replace(/</g, '&lt;'));
    expect(html).not.toMatch(/<script[^>]* src=|src="http|href="http/);
    expect(html).toContain('FerryChart.plotAll()');
    expect(html.match(/data-chart="/g)).toHaveLength(1);
    expect(html.match(/&quot;label&quot;:/g)).toHaveLength(2);
    expect(first.stdout).toContain(`report: ${path.join(out, 'results.html')}`);
    const second = await ferry(args, { FERRY_CACHE: tmp() });
    expect(second.code).toBe(0);
    // The same table (the dashboard line names a fresh port each time).
    const table = (s: string): string =>
      s
        .split('\n')
        .filter((l) => !l.startsWith('dashboard:'))
        .join('\n');
    expect(table(second.stdout)).toBe(table(first.stdout));
    expect(second.stderr).not.toContain('advisor:'); // the coordinator kept the advice: not computed again
    expect(first.stdout).toMatch(/^dashboard: http:\/\/127\.0\.0\.1:\d+\/$/m);
    const again = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as Cells;
    expect(again.cells.map((c) => c.attempts)).toEqual([1, 1]);
  });

  test('a staged sweep: the target cells wait for the pretrain cell, start from its best weights (fetched through the coordinator), and the advisor uses the same weights; an axis added later trains only the new cells', async () => {
    const root = tmp();
    await writeDemoDataset(path.join(root, 'demo'), { trainPerClass: 16, valPerClass: 6, size: 32, seed: 5 });
    await writeDemoSourceDataset(path.join(root, 'demo-source'), {
      trainPerClass: 8,
      valPerClass: 4,
      size: 32,
      seed: 5,
    });
    const sweep = path.join(tmp(), 'staged.yaml');
    writeFileSync(
      sweep,
      `name: staged
stages:
  - name: pretrain
    datasets: [{ name: demo-source, path: demo-source }]
    colors: [rgb]
    strategies: [finetune]
    models: [resnet_tiny]
    hyper: { weights: none, epochs: 1, batchSize: 16, lr: 0.02, imageSize: 32 }
  - name: target
    datasets: [{ name: demo, path: demo }]
    colors: [rgb]
    strategies: [finetune, freeze]
    models: [resnet_tiny]
    hyper: { weights: 'stage:pretrain', epochs: 1, batchSize: 16, lr: 0.02, imageSize: 32 }
`,
    );
    const out = path.join(tmp(), 'runs');
    const r = await ferry(
      ['run', sweep, '--data-root', root, '--out', out, '--backend', 'wasm', '--no-nats', '--dashboard-port', '0'],
      { FERRY_CACHE: tmp() },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('stages pretrain (1) -> target (2)');
    expect(r.stderr).toMatch(
      /waiting for demo-source rgb finetune resnet_tiny seed 0 \([0-9a-f]{8}, \w+\): 2 cell\(s\)/,
    );
    type Json = {
      table: ResultsTable;
      cells: { cellId: string; state: string; attempts: number; source: string | null }[];
    };
    const json = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as Json;
    const pretrain = json.cells.find((c) => c.source === null)!;
    expect(json.cells.map((c) => [c.state, c.attempts, c.source])).toEqual([
      ['done', 1, null],
      ['done', 1, pretrain.cellId],
      ['done', 1, pretrain.cellId],
    ]);
    const label = `demo-source rgb finetune (${pretrain.cellId.slice(0, 8)})`;
    // The advisor ran on the pretrain cell's weights, downloaded once that cell was done.
    expect(r.stderr).toMatch(
      new RegExp(`^advisor: demo rgb from ${label.replace(/[()]/g, '\\$&')}: .*, a heuristic$`, 'm'),
    );
    // One starting point per column: the weights do not split the row; the row's advice is the
    // one computed from the source's weights (matched on the raw cell:<id>).
    const row = json.table.rows.find((x) => x.dataset === 'demo')!;
    expect(row.group).toEqual({});
    expect(row.advice!.advice.heuristic).toBe(true);
    expect(json.table.rows.map((x) => x.dataset)).toEqual(['demo', 'demo-source']);

    // An axis added to the finished sweep: only the new cells train (the others keep their ids).
    const trained = (): string[] =>
      readdirSync(path.join(out, 'workers')).flatMap((w) => readdirSync(path.join(out, 'workers', w, 'cells')));
    expect(trained().sort()).toEqual(json.cells.map((c) => c.cellId).sort());
    writeFileSync(
      sweep,
      readFileSync(sweep, 'utf8').replace(
        "weights: 'stage:pretrain', epochs: 1",
        "weights: 'stage:pretrain', epochs: [1, 2]",
      ),
    );
    const more = await ferry(
      ['run', sweep, '--data-root', root, '--out', out, '--backend', 'wasm', '--no-nats', '--dashboard-port', '0'],
      { FERRY_CACHE: tmp() },
    );
    expect(more.code, more.stderr).toBe(0);
    const after = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as Json;
    const added = after.cells.filter((c) => !json.cells.some((x) => x.cellId === c.cellId));
    expect(added.map((c) => [c.state, c.attempts, c.source])).toEqual([
      ['done', 1, pretrain.cellId],
      ['done', 1, pretrain.cellId],
    ]);
    expect(after.cells.filter((c) => json.cells.some((x) => x.cellId === c.cellId)).map((c) => c.attempts)).toEqual([
      1, 1, 1,
    ]);
    expect(trained().sort()).toEqual(after.cells.map((c) => c.cellId).sort());
  }, 180_000);

  test('a sweep whose dataset no worker has fails fast with the reason and exit 2; the worker log is on disk', async () => {
    const root = path.dirname(demo);
    const sweep = path.join(tmp(), 'missing.yaml');
    writeFileSync(
      sweep,
      `name: missing
datasets: [{ name: ghost, path: no-such-dataset }]
colors: [rgb]
strategies: [finetune]
models: [resnet_tiny]
hyper: { weights: none, epochs: 1, batchSize: 16, imageSize: 32 }
`,
    );
    const out = path.join(tmp(), 'runs');
    const t0 = Date.now();
    const r = await ferry(['run', sweep, '--data-root', root, '--out', out, '--backend', 'wasm', '--no-nats'], {
      FERRY_CACHE: tmp(),
    });
    expect(r.code).toBe(2);
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(r.stderr).toContain('no worker can run 1 pending cell(s)');
    expect(r.stderr).toContain(
      'ghost rgb finetune resnet_tiny seed 0: FERRY_ERR_DATASET_MISMATCH: dataset ghost is not on this worker',
    );
    expect(r.stderr).toContain('[FERRY_ERR_DATASET_MISMATCH]');
    expect(readFileSync(path.join(out, 'logs', 'worker-0.log'), 'utf8')).toContain('worker');
  }, 120_000);

  test('cells that only a backend no local worker has can run are said, not waited on', async () => {
    const sweep = path.join(tmp(), 'gpu-only.yaml');
    writeFileSync(
      sweep,
      `name: gpuonly\ndatasets: [{ name: demo, path: ${path.basename(demo)} }]\ncolors: [rgb]\nstrategies: [finetune]\nmodels: [resnet_tiny]\nhyper: { weights: none, epochs: 1, batchSize: 16, imageSize: 32, backends: [webgpu] }\n`,
    );
    const r = await ferry(
      [
        'run',
        sweep,
        '--data-root',
        path.dirname(demo),
        '--out',
        path.join(tmp(), 'runs'),
        '--backend',
        'wasm',
        '--no-nats',
      ],
      { FERRY_CACHE: tmp() },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'demo rgb finetune resnet_tiny seed 0: FERRY_ERR_BACKEND_UNAVAILABLE: the cell runs only on webgpu; the local workers run wasm (see --backend)',
    );
    expect(r.stderr).toContain('[FERRY_ERR_BACKEND_UNAVAILABLE]');
  }, 120_000);

  test('an invalid sweep file is reported with line and path, nothing runs', async () => {
    const sweep = path.join(tmp(), 'bad.yaml');
    writeFileSync(sweep, 'name: bad\ndatasets: [{ name: d, path: d }]\nmodels: [resnet_tiny]\nhyper: { lr: -1 }\n');
    const r = await ferry(['run', sweep]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('line 4:10 hyper.lr: out of range (got -1)');
  });
});
