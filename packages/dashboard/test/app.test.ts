import { describe, expect, test } from 'vitest';
import { buildApp, DashboardState } from '@ferry/dashboard';
import { resultsTable, tableCsv } from '@ferry/common';
import { CellSpec, FerryEvent, type DeepPartial } from '@ferry/protocol';
import { weightsLabel } from '../src/api.js';

const spec = (color: string, strategy: string, seed: number): CellSpec =>
  CellSpec.fromPartial({
    dataset: 'ants',
    path: 'ants',
    color,
    strategy,
    model: 'resnet18',
    seed,
    epochs: 4,
    batchSize: 8,
    lr: 0.01,
    imageSize: 224,
    workers: 1,
  });

function feed(state: DashboardState, events: DeepPartial<FerryEvent>[]): void {
  for (const e of events) state.apply(FerryEvent.fromPartial({ sweepId: 's1', time: '2026-11-27T00:00:00Z', ...e }));
}

function sampleState(): DashboardState {
  const state = new DashboardState();
  feed(state, [{ sweep: { name: 'study', cells: 4, createdAt: '2026-11-27T00:00:00Z' } }]);
  // 50 val images; a cell gets the first `right` of them right. finetune: 45 and 47, freeze: 40 and
  // 41, so 11 images only finetune got right and none only freeze: McNemar p = 2 / 2^11.
  const labels = Array.from({ length: 50 }, (_, i) => i % 2);
  const cells: [string, string, string, number, number][] = [
    ['c1', 'rgb', 'finetune', 0, 45],
    ['c2', 'rgb', 'finetune', 1, 47],
    ['c3', 'rgb', 'freeze', 0, 40],
    ['c4', 'rgb', 'freeze', 1, 41],
  ];
  for (const [id, color, strategy, seed, right] of cells) {
    const acc = right / 50;
    const valPredictions = labels.map((l, i) => (i < right ? l : 1 - l));
    feed(state, [
      { cell: { cellId: id, spec: spec(color, strategy, seed), state: 'running', attempts: 1, worker: 'w1' } },
      ...[0, 1, 2].map((e) => ({
        epoch: {
          cellId: id,
          worker: 'w1',
          epoch: e,
          trainLoss: 1 - e * 0.2,
          valLoss: 1.1 - e * 0.2,
          trainAccuracy: 0.5 + e * 0.1,
          valAccuracy: acc - (2 - e) * 0.05,
          confusion: [{ counts: [5, 1] }, { counts: [2, 4] }],
          perClassAccuracy: [5 / 6, 4 / 6],
        },
      })),
      {
        cell: {
          cellId: id,
          spec: spec(color, strategy, seed),
          state: 'done',
          attempts: 1,
          bestValAccuracy: acc,
          bestEpoch: 2,
          wallMs: 1000,
          imagesPerSec: 50,
          classes: ['ants', 'bees'],
          confusion: [{ counts: [5, 1] }, { counts: [2, 4] }],
          perClassAccuracy: [5 / 6, 4 / 6],
          valPredictions,
          valLabels: labels,
          valSetHash: `seed${seed}`,
        },
      },
    ]);
  }
  feed(state, [
    {
      worker: {
        workerId: 'w1',
        name: 'gpu0',
        backend: 'webgpu',
        device: 'H100',
        state: 'alive',
        imagesPerSec: 123,
        cellId: '',
      },
    },
  ]);
  return state;
}

describe('dashboard routes (fastify inject)', () => {
  test('sweep list, sweep page with cells, workers and the comparison table', async () => {
    const { app } = buildApp({ state: sampleState() });
    const list = await app.inject('/api/sweeps');
    expect(list.json()).toEqual([
      {
        sweepId: 's1',
        name: 'study',
        createdAt: '2026-11-27T00:00:00Z',
        cells: 4,
        done: 4,
        running: 0,
        failed: 0,
        blocked: 0,
      },
    ]);
    const page = (await app.inject('/api/sweeps/s1')).json() as {
      cells: { cellId: string; state: string; progress: number; bestValAccuracy: number }[];
      workers: { name: string; imagesPerSec: number; backend: string }[];
      table: ReturnType<typeof resultsTable>;
    };
    expect(page.cells.map((c) => [c.cellId, c.state, c.progress])).toEqual([
      ['c1', 'done', 1],
      ['c2', 'done', 1],
      ['c3', 'done', 1],
      ['c4', 'done', 1],
    ]);
    expect(page.workers).toMatchObject([{ name: 'gpu0', backend: 'webgpu', imagesPerSec: 123 }]);
    const row = page.table.rows[0]!;
    expect(row.byStrategy['finetune']!.mean).toBeCloseTo(0.92, 10);
    expect(row.winner).toBe('finetune');
    expect(row.comparison).toMatchObject({ test: 'mcnemar-exact', discordant: [11, 0], pairedSeeds: 2 });
    expect(row.comparison!.pValue).toBeCloseTo(2 / 2 ** 11, 12);
    expect(row.byStrategy['finetune']).toMatchObject({ correct: 92, total: 100 });
    await app.close();
  });

  test("a cell's row names its starting weights: pretrained, none, a later stage's source cell, a file by its name", () => {
    expect(['pretrained', 'none', 'cell:0123456789abcdef', 'weights/r18-ants.pth', ''].map(weightsLabel)).toEqual([
      'pretrained',
      'none',
      'cell 01234567',
      'r18-ants.pth',
      '',
    ]);
  });

  test("Slurm: each worker's host and job; the jobs (a replayed history and live changes), the newest state of each", async () => {
    const state = sampleState();
    const cluster = (e: DeepPartial<FerryEvent>, time: string): void =>
      void state.apply(FerryEvent.fromPartial({ sweepId: '_cluster', time, ...e }));
    cluster({ job: { jobId: '41_0', state: 'PENDING', reason: 'Priority', node: '' } }, '2026-11-27T00:00:01Z');
    cluster({ job: { jobId: '41_1', state: 'PENDING', reason: 'Resources', node: '' } }, '2026-11-27T00:00:01Z');
    cluster({ job: { jobId: '41_0', state: 'RUNNING', reason: 'None', node: 'gpu7' } }, '2026-11-27T00:00:05Z');
    cluster(
      {
        worker: {
          workerId: 'w9',
          name: 'slurm-41_0',
          backend: 'torch',
          device: 'cuda:0',
          state: 'alive',
          host: 'gpu7',
          slurmJob: '41_0',
        },
      },
      '2026-11-27T00:00:06Z',
    );
    const { app } = buildApp({ state });
    const page = (await app.inject('/api/sweeps/s1')).json() as {
      workers: { name: string; host: string; slurmJob: string }[];
      jobs: { jobId: string; state: string; reason: string; node: string; time: string }[];
    };
    expect(page.workers.find((w) => w.name === 'slurm-41_0')).toMatchObject({ host: 'gpu7', slurmJob: '41_0' });
    expect(page.jobs).toEqual([
      { jobId: '41_1', state: 'PENDING', reason: 'Resources', node: '', time: '2026-11-27T00:00:01Z' },
      { jobId: '41_0', state: 'RUNNING', reason: 'None', node: 'gpu7', time: '2026-11-27T00:00:05Z' },
    ]);
    await app.close();
  });

  test('the table export is exactly what `ferry sweep results` prints, in CSV, Markdown and JSON', async () => {
    const state = sampleState();
    const { app } = buildApp({ state });
    const expected = resultsTable(
      [...state.sweeps.get('s1')!.cells.values()].map((c) => ({
        spec: c.spec!,
        bestValAccuracy: c.bestValAccuracy,
        bestEpoch: c.bestEpoch,
        wallMs: c.wallMs,
        imagesPerSec: c.imagesPerSec,
        predictions: c.predictions!,
      })),
    );
    const csv = await app.inject('/api/sweeps/s1/table?format=csv');
    expect(csv.headers['content-type']).toContain('text/csv');
    expect(csv.body).toBe(`${tableCsv(expected)}\n`);
    expect((await app.inject('/api/sweeps/s1/table?format=md')).body).toContain(
      '| ants | rgb | **92.0% +/- 2.8 [85.0, 95.9]** | 81.0% +/- 1.4 [72.2, 87.5] | finetune (McNemar p = 0.00098) |',
    );
    expect((await app.inject('/api/sweeps/s1/table')).json()).toEqual(JSON.parse(JSON.stringify(expected)));
    // Bad input is fastify's schema validation: a 400 that says what the value must be.
    const xml = await app.inject('/api/sweeps/s1/table?format=xml');
    expect([xml.statusCode, xml.json()]).toEqual([400, { error: 'format must be json, csv or md' }]);
    expect((await app.inject(`/api/cells/${'x'.repeat(300)}`)).statusCode).toBe(414); // fastify's 100-character limit
    expect((await app.inject('/api/sweeps?unknown=1')).statusCode).toBe(200);
    expect((await app.inject('/chart.js')).body).toContain('const FerryChart');
    expect((await app.inject('/api/sweeps/nope/table')).statusCode).toBe(404);
    await app.close();
  });

  test("the advisor's prediction (an advice event, live or replayed) shows beside the verdict", async () => {
    const state = sampleState();
    const advice = (weights: string, winner: string, margin: number) => ({
      advice: {
        dataset: 'ants',
        color: 'rgb',
        model: 'resnet18',
        weights,
        advice: { winner, marginPoints: margin, rangeLow: margin - 3, rangeHigh: margin + 3, note: 'a heuristic' },
      },
    });
    // The cells' weights are '' here; advice for other weights is another row's.
    feed(state, [advice('pretrained', 'freeze', -9), advice('', 'freeze', -4), advice('', 'finetune', 5)]);
    const { app } = buildApp({ state });
    const t = (await app.inject('/api/sweeps/s1')).json().table as ReturnType<typeof resultsTable>;
    expect(t.rows[0]!.advice).toMatchObject({ text: 'finetune +5 (2 to 8)', agrees: true });
    expect(t.advisor).toMatchObject({ rows: 1, compared: 1, agreed: 1 });
    expect(t.advisor!.legend).toContain('the advisor agreed with the verdict on 1 of 1 row');
    const md = (await app.inject('/api/sweeps/s1/table?format=md')).body;
    expect(md).toContain('| finetune (McNemar p = 0.00098) | finetune +5 (2 to 8) |');
    // The page's table draws the column, titled a heuristic.
    const js = (await app.inject('/app.js')).body;
    expect(js).toContain('advisor (heuristic)');
    expect(js).toMatch(/class="advice" title="heuristic/);
    await app.close();
  });

  test('a cell page has its curves, confusion matrix and per-class accuracy; a resumed attempt replaces epochs from its start', async () => {
    const state = sampleState();
    // c1 is re-run from epoch 1 (resume): epochs 1.. are replaced, epoch 0 stays.
    feed(state, [
      {
        epoch: {
          cellId: 'c1',
          worker: 'w2',
          epoch: 1,
          trainLoss: 0.42,
          valLoss: 0.5,
          trainAccuracy: 0.7,
          valAccuracy: 0.8,
          confusion: [],
          perClassAccuracy: [],
        },
      },
    ]);
    const { app } = buildApp({ state });
    const c = (await app.inject('/api/cells/c1')).json() as {
      curves: { epoch: number; trainLoss: number }[];
      confusion: number[][];
      perClassAccuracy: number[];
      classes: string[];
    };
    expect(c.curves.map((p) => [p.epoch, p.trainLoss])).toEqual([
      [0, 1],
      [1, 0.42],
    ]);
    expect(c.confusion).toEqual([
      [5, 1],
      [2, 4],
    ]);
    expect(c.classes).toEqual(['ants', 'bees']);
    expect((await app.inject('/api/cells/nope')).statusCode).toBe(404);
    await app.close();
  });

  test('1,000 cells with long curves: the sweep page stays small and fast; curves are downsampled', async () => {
    const state = new DashboardState();
    feed(state, [{ sweep: { name: 'big', cells: 1000, createdAt: '' } }]);
    for (let i = 0; i < 1000; i++) {
      feed(state, [
        {
          cell: {
            cellId: `c${i}`,
            spec: spec(i % 2 ? 'gray' : 'rgb', i % 4 < 2 ? 'finetune' : 'freeze', i),
            state: 'running',
            attempts: 1,
            worker: 'w',
          },
        },
      ]);
      feed(state, [
        {
          step: {
            cellId: `c${i}`,
            worker: 'w',
            epoch: 1,
            step: 5,
            stepsPerEpoch: 10,
            loss: 0.5,
            imagesPerSec: 10,
            etaMs: 1000,
            epochs: 4,
          },
        },
      ]);
    }
    for (let e = 0; e < 1000; e++)
      feed(state, [
        {
          epoch: {
            cellId: 'c0',
            worker: 'w',
            epoch: e,
            trainLoss: 1 / (e + 1),
            valLoss: 1,
            trainAccuracy: 0.5,
            valAccuracy: 0.5,
            confusion: [],
            perClassAccuracy: [],
          },
        },
      ]);
    const { app } = buildApp({ state });
    const t0 = performance.now();
    const r = await app.inject('/api/sweeps/s1');
    expect(performance.now() - t0).toBeLessThan(500);
    expect((r.json() as { cells: unknown[] }).cells).toHaveLength(1000);
    expect(r.body.length).toBeLessThan(400_000);
    const c = (await app.inject('/api/cells/c0')).json() as { curves: { epoch: number }[] };
    expect(c.curves).toHaveLength(200);
    expect(c.curves.at(-1)!.epoch).toBe(999);
    await app.close();
  });

  test('with a token, every route but /healthz needs it (header, query, or the cookie the query sets)', async () => {
    const { app } = buildApp({ state: sampleState(), token: 't0k' });
    expect((await app.inject('/api/sweeps')).statusCode).toBe(401);
    expect((await app.inject('/')).statusCode).toBe(401);
    expect((await app.inject('/healthz')).statusCode).toBe(200);
    expect((await app.inject({ url: '/api/sweeps', headers: { authorization: 'Bearer t0k' } })).statusCode).toBe(200);
    expect((await app.inject({ url: '/api/sweeps', headers: { authorization: 'Bearer nope' } })).statusCode).toBe(401);
    const viaQuery = await app.inject('/?token=t0k');
    expect(viaQuery.statusCode).toBe(200);
    const cookie = String(viaQuery.headers['set-cookie']).split(';')[0]!;
    expect((await app.inject({ url: '/api/sweeps', headers: { cookie } })).statusCode).toBe(200);
    await app.close();
  });

  test('serves the UI', async () => {
    const { app } = buildApp({ state: new DashboardState() });
    const html = await app.inject('/');
    expect(html.headers['content-type']).toContain('text/html');
    // The UI is ES modules: app.js, which imports chart.js; uPlot's build is the one classic script.
    expect(html.body).toContain('<script type="module" src="/app.js">');
    const appJs = (await app.inject('/app.js')).body;
    expect(appJs).toContain("new EventSource('/api/events')");
    expect(appJs).toContain("import { FerryChart } from './chart.js';");
    expect((await app.inject('/chart.js')).body).toContain('export const FerryChart');
    expect((await app.inject('/index.html')).body).toBe(html.body);
    // uPlot from its package (cached a day), and nothing else of either folder.
    const uplot = await app.inject('/vendor/uPlot.iife.min.js');
    expect([uplot.statusCode, uplot.headers['content-type'], uplot.headers['cache-control']]).toEqual([
      200,
      expect.stringContaining('javascript'),
      'public, max-age=86400',
    ]);
    expect((await app.inject('/vendor/uPlot.min.css')).statusCode).toBe(200);
    for (const other of ['/globals.d.ts', '/vendor/uPlot.esm.js', '/vendor/../package.json', '/nope.js'])
      expect((await app.inject(other)).statusCode, other).toBe(404);
    await app.close();
  });

  test('a token of the right length in other bytes, a malformed cookie and no token are refused with 401, never 500; every answer carries a CSP', async () => {
    const { app } = buildApp({ state: sampleState(), token: 'abcdefgh' });
    // 8 characters, 16 bytes: same length as the token in characters only.
    const multibyte = await app.inject(`/api/sweeps?token=${encodeURIComponent('éééééééé')}`);
    expect(multibyte.statusCode).toBe(401);
    expect((await app.inject({ url: '/api/sweeps', headers: { cookie: 'ferry_token=%E0%A4%A' } })).statusCode).toBe(
      401,
    );
    expect((await app.inject({ url: '/api/sweeps', headers: { authorization: 'Bearer abcdefgX' } })).statusCode).toBe(
      401,
    );
    const ok = await app.inject({ url: '/api/sweeps', headers: { authorization: 'Bearer abcdefgh' } });
    expect(ok.statusCode).toBe(200);
    for (const r of [ok, multibyte, await app.inject('/healthz')]) {
      expect(r.headers['content-security-policy']).toContain("script-src 'self'");
      expect(r.headers['x-content-type-options']).toBe('nosniff');
    }
    await app.close();
  });
});
