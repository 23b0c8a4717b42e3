import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ResultsRow, ResultsTable } from '@ferry/common';
import type { CellDetail, SweepDetail } from '@ferry/dashboard';
import { writeDemoDataset } from '@ferry/core';
import { adminClient, unary } from '@ferry/client';
import { kill, startCoordinator, startNats, startWorker, submit, waitFor, type Proc } from './helpers/cluster.js';
import { REPO_ROOT } from './helpers/torch-ref.js';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * End to end in a real browser: nats-server, coordinator, a worker and the dashboard as processes;
 * headless Chromium (Debian's) watches a tiny sweep: a curve updates live, the table fills in.
 */
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-e2e-'));
const procs: Proc[] = [];
let browser: Browser | undefined;

/** Half a unit of the last digit the page prints percentages with (one decimal: 0.05 points). */
const SHOWN_PCT = 0.05 + 1e-9;

/** A percentage as the page prints it ("83.3%", "83.3% ± 1.2 [71.0, 90.1]"): its numbers, in percent. */
function parseAcc(text: string): { mean: number; std: number | null; ci: [number, number] | null } {
  const m = /^(\d+\.\d)%(?: ± (\d+\.\d))?(?: \[(\d+\.\d), (\d+\.\d)\])?$/.exec(text.trim());
  if (!m) throw new Error(`not an accuracy as the page prints it: ${JSON.stringify(text)}`);
  return {
    mean: Number(m[1]),
    std: m[2] === undefined ? null : Number(m[2]),
    ci: m[3] === undefined ? null : [Number(m[3]), Number(m[4])],
  };
}

/**
 * The winner a row's numbers imply, from the API's own numbers rather than its `winner` field: the
 * better of the two columns with the highest accuracies (more images right only in it: McNemar's
 * discordant pairs), and only when the p-value is below alpha.
 */
function impliedWinner(row: ResultsRow, table: ResultsTable): string | null {
  const c = row.comparison!;
  const byMean = table.strategies
    .filter((s) => row.byStrategy[s])
    .sort((x, y) => row.byStrategy[y]!.mean - row.byStrategy[x]!.mean);
  expect(new Set([c.a, c.b])).toEqual(new Set(byMean.slice(0, 2)));
  if (c.pValue === null || c.pValue >= table.alpha) return null;
  const [onlyA, onlyB] = c.discordant!;
  return onlyA > onlyB ? c.a : onlyB > onlyA ? c.b : null;
}

/**
 * The comparison table as a user reads it (#table: each strategy's accuracy and interval, which
 * one is marked the winner, the verdict), against the API's table for the same sweep: every number
 * within the page's rounding, the winner the one the API's numbers imply.
 */
async function expectTableShowsApi(page: Page, api: ResultsTable): Promise<void> {
  const shown = await page.$$eval('#table tr', (trs) =>
    trs.slice(1).map((tr) => ({
      cells: Array.from(tr.querySelectorAll('td')).map((td) => td.textContent ?? ''),
      acc: Object.fromEntries(
        Array.from(tr.querySelectorAll('td.acc')).map((td) => [
          (td as HTMLElement).dataset['strategy']!,
          { text: td.textContent ?? '', winner: td.classList.contains('winner') },
        ]),
      ),
      bestEpoch: Object.fromEntries(
        Array.from(tr.querySelectorAll('td.best-epoch')).map((td) => [
          (td as HTMLElement).dataset['strategy']!,
          td.textContent ?? '',
        ]),
      ),
      verdict: tr.querySelector('td.verdict')?.textContent ?? '',
      noise: tr.querySelector('td.verdict')?.classList.contains('noise') ?? false,
      advice: tr.querySelector('td.advice')?.textContent ?? null,
    })),
  );
  expect(shown).toHaveLength(api.rows.length);
  api.rows.forEach((row, i) => {
    const r = shown[i]!;
    const where = `row ${i} (${row.dataset} ${row.color})`;
    expect(r.cells.slice(0, 3), where).toEqual([row.dataset, row.color, row.model]);
    const winner = impliedWinner(row, api);
    expect(row.winner, `${where}: the API's winner is its numbers' winner`).toBe(winner);
    for (const s of api.strategies) {
      const c = row.byStrategy[s];
      if (!c) continue;
      const acc = parseAcc(r.acc[s]!.text);
      expect(Math.abs(acc.mean - c.mean * 100), `${where} ${s}: ${r.acc[s]!.text} vs ${c.mean}`).toBeLessThanOrEqual(
        SHOWN_PCT,
      );
      if (c.n > 1) expect(Math.abs(acc.std! - c.std * 100), `${where} ${s} std`).toBeLessThanOrEqual(SHOWN_PCT);
      expect(acc.ci === null, `${where} ${s}: an interval shown iff the API has one`).toBe(c.ci95 === null);
      if (c.ci95) {
        expect(Math.abs(acc.ci![0] - c.ci95[0] * 100), `${where} ${s} low`).toBeLessThanOrEqual(SHOWN_PCT);
        expect(Math.abs(acc.ci![1] - c.ci95[1] * 100), `${where} ${s} high`).toBeLessThanOrEqual(SHOWN_PCT);
      }
      expect(r.acc[s]!.winner, `${where}: ${s} marked the winner`).toBe(s === winner);
      // The best epoch counted from 1: one seed's exactly, a mean over seeds to a tenth.
      const epoch = r.bestEpoch[s]!;
      if (c.n === 1) expect(epoch, `${where} ${s} best epoch`).toBe(String(c.bestEpochMean + 1));
      else
        expect(Math.abs(Number(epoch) - (c.bestEpochMean + 1)), `${where} ${s} best epoch`).toBeLessThanOrEqual(0.05);
    }
    expect(r.verdict, where).toBe(row.verdict);
    expect(r.noise, `${where}: the verdict greyed out iff no winner`).toBe(winner === null);
    // The advisor's column (a heuristic) shows the API's advice, when any row has advice.
    expect(r.advice, `${where}: advisor`).toBe(api.advisor ? (row.advice?.text ?? '-') : null);
    if (winner) expect(r.verdict.startsWith(`${winner} (`), where).toBe(true);
    else expect(r.verdict, where).toMatch(/^no (significant difference|test)/);
  });
}

/**
 * The values a uPlot chart of the page plots (x, then a series per cell), from the chart object
 * itself: app.js's `charts` registry, which the module puts on `window.ferry` for the console.
 */
async function plotted(page: Page, box: string): Promise<(number | null)[][]> {
  return page.evaluate(`[...window.ferry.charts.get(${JSON.stringify(box)}).chart.plot.data].map((s) => [...s])`);
}

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  for (const p of procs.splice(0).reverse()) await kill(p, 'SIGTERM');
});

// The waits below, in order: 60 s (two cells listed) + 10 + 60 (one running) + 30 (the chart) + 60
// (the curve moves) + 120 (the verdict) + 120 (both done) + 30 (8 epochs plotted) = 490 s, plus
// 50 s for NATS, the coordinator, the dashboard and the browser to start: a slow run fails at
// the wait that is slow, with its name, not at a global limit.
const LIVE_TEST_MS = 540_000;

test(
  'the dashboard shows a sweep live: cells progress, a curve updates, the comparison table fills in',
  async () => {
    const dataRoot = tmp();
    await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 24, valPerClass: 8, size: 32, seed: 5 });
    const nats = await startNats(tmp());
    procs.push(nats);
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), '--nats', nats.url]);
    procs.push(coord);
    const dash = spawn(
      process.execPath,
      [path.join(REPO_ROOT, 'packages/cli/bin/ferry.js'), 'dashboard', '--nats', nats.url, '--listen', '127.0.0.1:0'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    procs.push({ child: dash, log: () => '', exited: new Promise((r) => dash.on('exit', r)) });
    const url = await new Promise<string>((resolve) =>
      createInterface({ input: dash.stdout }).on(
        'line',
        (l) => /^dashboard on (\S+)/.test(l) && resolve(/^dashboard on (\S+)/.exec(l)![1]!),
      ),
    );
    const sweepId = await submit(
      { address: coord.address },
      `name: e2e
datasets: [{ name: demo, path: demo }]
colors: [rgb]
strategies: [finetune, freeze]
models: [resnet_tiny]
hyper: { weights: none, epochs: 8, batchSize: 16, lr: 0.02, imageSize: 32 }
`,
    );
    // The advisor's prediction, as `ferry run` stores it (PutAdvice): the table shows it beside the verdict.
    const admin = adminClient({ address: coord.address });
    await unary(
      admin.putAdvice,
      admin,
      {
        sweepId,
        rows: [
          {
            dataset: 'demo',
            color: 'rgb',
            model: 'resnet_tiny',
            weights: 'none',
            measured: '',
            time: '',
            advice: {
              winner: 'finetune',
              marginPoints: 5,
              rangeLow: 2,
              rangeHigh: 8,
              reasons: [],
              note: 'a heuristic',
            },
          },
        ],
      },
      { address: coord.address },
      10_000,
    );
    admin.close();
    procs.push(
      startWorker(coord.address, {
        name: 'e2e-worker',
        dataRoot,
        workDir: tmp(),
        cacheDir: tmp(),
        extra: ['--nats', nats.url],
      }),
    );

    const page = await browser!.newPage({ viewport: { width: 1300, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(`${url}#/sweep/${sweepId}`);
    await page.waitForSelector('#cells tr.cell >> nth=1', { timeout: 60_000 });
    await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('live'), undefined, {
      timeout: 10_000,
    });
    // Follow the running cell's curve: it gains points as epochs finish.
    await page.waitForSelector('#cells tr.cell td.state-running', { timeout: 60_000 });
    await page.click('#cells tr.cell:has(td.state-running)');
    const points = async (): Promise<number> => Number((await page.getAttribute('#overlay', 'data-points')) ?? 0);
    await page.waitForSelector('#overlay .uplot', { timeout: 30_000 });
    const first = await waitFor(
      'a first epoch on the curve',
      60_000,
      async () => ((await points()) >= 1 ? points() : undefined),
      200,
    );
    await waitFor('the curve to update live', 60_000, async () => ((await points()) > first ? true : undefined), 200);
    // Both cells finish; the comparison table fills in with the verdict of a paired test.
    await page.waitForSelector('#table td.verdict', { timeout: 120_000 });
    await page.waitForFunction(() => document.getElementById('summary')?.textContent === '2/2 cells done', undefined, {
      timeout: 120_000,
    });
    // What the page shows is what the API computed: each accuracy and interval, the winner its
    // numbers imply (whichever it is: this run's data decide), the verdict.
    const api = (await (await fetch(`${url}api/sweeps/${sweepId}/table?format=json`)).json()) as ResultsTable;
    expect(api.rows.map((r) => [r.dataset, r.color, r.comparison?.test])).toEqual([['demo', 'rgb', 'mcnemar-exact']]);
    expect(api.rows[0]!.advice!.text).toBe('finetune +5 (2 to 8)');
    await expectTableShowsApi(page, api);
    // The cells table's best val accuracy is each cell's (and, one seed, its column's in the table).
    const detail = (await (await fetch(`${url}api/sweeps/${sweepId}`)).json()) as SweepDetail;
    const best = await page.$$eval('#cells tr.cell', (trs) =>
      trs.map((tr) => [
        (tr as HTMLElement).dataset['cell']!,
        tr.querySelector('td.best-val')?.textContent ?? '',
        tr.querySelector('td.weights')?.textContent ?? '',
      ]),
    );
    expect(best).toHaveLength(2);
    for (const [id, text, weights] of best) {
      const c = detail.cells.find((x) => x.cellId === id)!;
      // Its starting weights (what tells the pretrained freeze from the random-weights one).
      expect(weights).toBe(c.weights);
      expect(weights).not.toBe('');
      expect(Math.abs(parseAcc(text!).mean - c.bestValAccuracy * 100), `${id}: ${text}`).toBeLessThanOrEqual(SHOWN_PCT);
      expect(api.rows[0]!.byStrategy[c.strategy]!.mean).toBe(c.bestValAccuracy);
    }
    // The followed cell's curve plots the API's val accuracy of each of its 8 epochs, at epochs 1..8.
    const followed = decodeURIComponent(/cells=([^&]+)/.exec(new URL(page.url()).hash)![1]!);
    const cell = (await (await fetch(`${url}api/cells/${encodeURIComponent(followed)}`)).json()) as CellDetail;
    expect(cell.curves).toHaveLength(8);
    await waitFor('the curve to plot all 8 epochs', 30_000, async () => ((await points()) === 8 ? true : undefined));
    expect(await plotted(page, 'overlay')).toEqual([[1, 2, 3, 4, 5, 6, 7, 8], cell.curves.map((p) => p.valAccuracy)]);
    // The legend says which freeze the column holds.
    expect(await page.textContent('#legend')).toContain(
      "freeze: the study's freeze: backbone weights fixed, its BatchNorm in training mode",
    );
    const artifacts = path.join(REPO_ROOT, 'test-artifacts');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'dashboard.png'), fullPage: true });
    // The CSV export is the same table.
    const csv = await (await fetch(`${url}api/sweeps/${sweepId}/table?format=csv`)).text();
    expect(csv.split('\n')[1]).toMatch(/^demo,rgb,resnet_tiny,/);
    expect(errors).toEqual([]);
    await page.close();
  },
  LIVE_TEST_MS,
);

test('1,000 cells with live updates render and keep updating without freezing the page', async () => {
  const { buildApp, DashboardState } = await import('@ferry/dashboard');
  const { CellSpec, FerryEvent } = await import('@ferry/protocol');
  const state = new DashboardState();
  const apply = (e: Parameters<typeof FerryEvent.fromPartial>[0]): void => {
    const c = state.apply(FerryEvent.fromPartial({ sweepId: 'big', time: new Date().toISOString(), ...e }));
    if (c) feed.changed(c);
  };
  const { app, feed } = buildApp({ state });
  apply({ sweep: { name: 'big', cells: 1000, createdAt: '' } });
  for (let i = 0; i < 1000; i++) {
    apply({
      cell: {
        cellId: `c${i}`,
        spec: CellSpec.fromPartial({
          dataset: `d${i % 10}`,
          color: i % 2 ? 'gray' : 'rgb',
          strategy: i % 4 < 2 ? 'finetune' : 'freeze',
          model: 'resnet18',
          seed: Math.floor(i / 40),
          epochs: 15,
        }),
        state: 'running',
        attempts: 1,
        worker: `w${i % 8}`,
      },
    });
  }
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address() as { port: number };
  const page = await browser!.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const t0 = Date.now();
  await page.goto(`http://127.0.0.1:${addr.port}/#/sweep/big`);
  await page.waitForSelector('#cells tr.cell >> nth=999', { timeout: 20_000 });
  const firstRender = Date.now() - t0;
  // 20 updates a second for 3 seconds; the page must keep answering quickly.
  let tick = 0;
  const timer = setInterval(() => {
    tick++;
    for (let k = 0; k < 50; k++)
      apply({
        step: {
          cellId: `c${(tick * 50 + k) % 1000}`,
          worker: 'w',
          epoch: tick % 15,
          step: 1,
          stepsPerEpoch: 10,
          loss: 0.5,
          imagesPerSec: 10,
          etaMs: 1000,
          epochs: 15,
        },
      });
  }, 50);
  const lags: number[] = [];
  for (let i = 0; i < 15; i++) {
    const s = Date.now();
    await page.evaluate(() => document.querySelectorAll('#cells tr.cell').length);
    lags.push(Date.now() - s);
    await new Promise((r) => setTimeout(r, 200));
  }
  clearInterval(timer);
  const sorted = [...lags].sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      test: 'dashboard-1000-cells',
      firstRenderMs: firstRender,
      lagMedianMs: sorted[Math.floor(sorted.length / 2)],
      lagWorstMs: sorted.at(-1),
    }),
  );
  expect(firstRender).toBeLessThan(10_000);
  expect(Math.max(...lags)).toBeLessThan(1_000);
  // The updates reached the page: a cell's row shows the epoch its last step event carried.
  apply({
    step: {
      cellId: 'c7',
      worker: 'w',
      epoch: 11,
      step: 5,
      stepsPerEpoch: 10,
      loss: 0.5,
      imagesPerSec: 10,
      etaMs: 1000,
      epochs: 15,
    },
  });
  await page.waitForFunction(
    () => document.querySelector('#cells tr.cell[data-cell="c7"]')?.textContent?.includes('12/15'),
    undefined,
    { timeout: 10_000 },
  );
  expect(errors).toEqual([]);
  await page.close();
  await app.close();
});

test('markup in event text (a cell id, a dataset name) is shown as text: clicking the row runs nothing, the page raises no error', async () => {
  const { buildApp, DashboardState } = await import('@ferry/dashboard');
  const { CellSpec, FerryEvent } = await import('@ferry/protocol');
  const state = new DashboardState();
  const evil = `x" onclick="window.__pwned=1" data-x="`;
  const apply = (e: Parameters<typeof FerryEvent.fromPartial>[0]): void =>
    void state.apply(FerryEvent.fromPartial({ sweepId: 'xss', time: new Date().toISOString(), ...e }));
  apply({ sweep: { name: 'xss', cells: 1, createdAt: '' } });
  apply({
    cell: {
      cellId: evil,
      spec: CellSpec.fromPartial({
        dataset: '<img src=x onerror="window.__pwned=2">',
        color: 'rgb',
        strategy: 'finetune',
        model: 'resnet18',
        seed: 0,
        epochs: 3,
      }),
      state: 'running',
      attempts: 1,
      worker: 'w',
    },
  });
  const { app } = buildApp({ state });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address() as { port: number };
  const page = await browser!.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${addr.port}/#/sweep/xss`);
  await page.waitForSelector('#cells tr.cell');
  expect(await page.textContent('#cells tr.cell td >> nth=1')).toBe('<img src=x onerror="window.__pwned=2">');
  expect(await page.getAttribute('#cells tr.cell', 'data-cell')).toBe(evil);
  await page.click('#cells tr.cell');
  await new Promise((r) => setTimeout(r, 300));
  expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
  expect(errors).toEqual([]);
  await page.close();
  await app.close();
});

test("ferry run's process restarts are listed on the sweep page: crash with its exit and last log line, restart, crash loop", async () => {
  const { buildApp, DashboardState } = await import('@ferry/dashboard');
  const { CellSpec, FerryEvent } = await import('@ferry/protocol');
  const state = new DashboardState();
  const { app, feed } = buildApp({ state });
  const apply = (e: Parameters<typeof FerryEvent.fromPartial>[0]): void => {
    const c = state.apply(FerryEvent.fromPartial({ sweepId: 'sup', time: '2026-11-29T02:00:00.000Z', ...e }));
    if (c) feed.changed(c);
  };
  apply({ sweep: { name: 'supervised', cells: 1, createdAt: '' } });
  apply({
    cell: {
      cellId: 'c0',
      spec: CellSpec.fromPartial({
        dataset: 'demo',
        color: 'rgb',
        strategy: 'finetune',
        model: 'resnet18',
        seed: 0,
        epochs: 3,
      }),
      state: 'running',
      attempts: 1,
      worker: 'local-0',
    },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address() as { port: number };
  const page = await browser!.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${addr.port}/#/sweep/sup`);
  await page.waitForSelector('#cells tr.cell');
  expect(await page.$('#process-events')).toBeNull(); // nothing crashed: no section
  const log = '/runs/supervised/logs/worker-0.log';
  // Live: events arriving while the page is open appear without a reload.
  apply({
    process: {
      name: 'worker local-0',
      kind: 'worker',
      state: 'crashed',
      exit: 'signal SIGKILL',
      restarts: 1,
      logTail: ['epoch 3', '<b>last</b> line'],
      log,
    },
  });
  apply({ process: { name: 'worker local-0', kind: 'worker', state: 'restarted', restarts: 1, log } });
  apply({
    process: {
      name: 'dashboard',
      kind: 'dashboard',
      state: 'gave-up',
      exit: 'exit code 1',
      logTail: ['EADDRINUSE'],
      log: '/runs/supervised/logs/dashboard.log',
    },
  });
  await page.waitForSelector('#process-events tr.process-gave-up', { timeout: 10_000 });
  const rows = await page.$$eval('#process-events tr', (trs) =>
    trs.slice(1).map((tr) =>
      Array.from(tr.querySelectorAll('td'))
        .slice(1)
        .map((td) => td.textContent),
    ),
  );
  expect(rows).toEqual([
    ['worker local-0', 'exited unexpectedly', 'signal SIGKILL', '1', '<b>last</b> line'],
    ['worker local-0', 'restarted', '', '1', ''],
    ['dashboard', 'crash loop: not restarted', 'exit code 1', '', 'EADDRINUSE'],
  ]);
  expect(await page.getAttribute('#process-events tr.process-crashed td:last-child', 'title')).toBe(log);
  mkdirSync(path.join(REPO_ROOT, 'test-artifacts'), { recursive: true });
  await page.screenshot({ path: path.join(REPO_ROOT, 'test-artifacts', 'dashboard-restarts.png'), fullPage: true });
  expect(errors).toEqual([]);
  await page.close();
  await app.close();
});

test("results.html is one self-contained file: no network request, the verdict table, overlaid curves (the dashboard's chart code) with a legend, heat-map confusion matrices; printable", async () => {
  const { resultsHtml } = await import('../packages/cli/src/report.js');
  const { resultsTable } = await import('@ferry/common');
  const labels = Array.from({ length: 40 }, (_, i) => i % 4);
  const cells = (['finetune', 'freeze'] as const).flatMap((strategy, k) =>
    [0, 1].map((seed) => {
      const predicted = labels.map((l, i) => (i % (k === 0 ? 10 : 3) === 0 ? (l + 1) % 4 : l));
      const epochs = Array.from({ length: 6 }, (_, e) => ({
        epoch: e,
        valAccuracy: 0.3 + 0.1 * e * (k === 0 ? 1 : 0.6) + 0.01 * seed,
        trainLoss: 1 / (e + 1),
      }));
      const confusion = [0, 1, 2, 3].map((t) =>
        [0, 1, 2, 3].map((p) => labels.filter((l, i) => l === t && predicted[i] === p).length),
      );
      return {
        spec: {
          dataset: 'demo',
          path: 'demo',
          valFraction: null,
          color: 'rgb' as const,
          strategy,
          model: 'resnet18',
          seed,
        },
        bestEpoch: 5,
        bestValAccuracy: epochs[5]!.valAccuracy,
        wallMs: 1,
        imagesPerSec: 1,
        epochs,
        confusion,
        predictions: { predicted, labels, valSetHash: 'h' },
      };
    }),
  );
  const table = resultsTable(cells);
  const html = resultsHtml(
    'demo <study>',
    table,
    cells.map((c) => ({
      ...c.spec,
      bestEpoch: c.bestEpoch,
      bestValAccuracy: c.bestValAccuracy,
      epochs: c.epochs,
      classes: ['a', 'b', 'c', 'd'],
      confusion: c.confusion,
    })),
  );
  const dir = path.join(REPO_ROOT, 'test-artifacts');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'results.html');
  (await import('node:fs')).writeFileSync(file, html);
  const page = await browser!.newPage();
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(`file://${file}`);
  expect(requests).toEqual([`file://${file}`]);
  expect(await page.title()).toBe('demo <study>: ferry results');
  const row = await page.$$eval('table.results tr', (trs) =>
    trs.slice(1).map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)),
  );
  expect(row[0]!.slice(0, 2)).toEqual(['demo', 'rgb']);
  expect(row[0]![4]).toBe(table.rows[0]!.verdict);
  // The dashboard's chart code (uPlot and public/chart.js, inlined): one chart of the row's four
  // cells, six epochs each, a legend entry per cell after the x series.
  await page.waitForSelector('.chart .uplot');
  expect(await page.$$eval('.chart .uplot', (l) => l.length)).toBe(1);
  expect(await page.getAttribute('.chart .plot', 'data-series')).toBe('4');
  expect(await page.getAttribute('.chart .plot', 'data-points')).toBe('6');
  expect(await page.textContent('.chart .u-title')).toBe('demo rgb: val accuracy per epoch');
  expect(
    (await page.$$eval('.chart .u-legend .u-series .u-label', (l) => l.map((k) => k.textContent))).slice(1),
  ).toEqual(['finetune seed 0', 'finetune seed 1', 'freeze seed 0', 'freeze seed 1']);
  expect(await page.$$eval('figure.confusion', (l) => l.length)).toBe(4);
  await page.screenshot({ path: path.join(dir, 'results-html.png'), fullPage: true });
  const pdf = await page.pdf({ format: 'A4' });
  expect(pdf.subarray(0, 4).toString()).toBe('%PDF');
  await page.close();
});

test('the sweep page: chosen cells overlaid on one chart, heat maps with a normalised view, sorting and filtering, state in the URL, keyboard, dark mode, a phone', async () => {
  const { buildApp, DashboardState } = await import('@ferry/dashboard');
  const { CellSpec, ConfusionRow, FerryEvent } = await import('@ferry/protocol');
  const state = new DashboardState();
  const apply = (e: Parameters<typeof FerryEvent.fromPartial>[0]): void =>
    void state.apply(FerryEvent.fromPartial({ sweepId: 'ui', time: new Date().toISOString(), ...e }));
  apply({ sweep: { name: 'ui study', cells: 4, createdAt: '' } });
  const specs = [
    ['c0', 'rgb', 'finetune', 0.9],
    ['c1', 'rgb', 'freeze', 0.6],
    ['c2', 'gray', 'finetune', 0.4],
    ['c3', 'gray', 'freeze', 0.7],
  ] as const;
  // 40 val images: a cell gets the first top * 40 right. So on rgb finetune is right on 12 images
  // where freeze is wrong and never the reverse, on gray freeze on 12: exact McNemar p = 2 / 2^12
  // = 0.00049 < 0.05, finetune wins rgb and freeze wins gray.
  const valLabels = Array.from({ length: 40 }, (_, i) => i % 2);
  for (const [id, color, strategy, top] of specs) {
    for (let e = 0; e < 6; e++) {
      apply({
        epoch: {
          cellId: id,
          worker: 'w',
          epoch: e,
          trainLoss: 1.5 / (e + 1),
          trainAccuracy: (top * (e + 1)) / 6,
          valLoss: 1 / (e + 1),
          valAccuracy: top * Math.min(1, (e + 2) / 6),
          confusion: [],
          perClassAccuracy: [],
        },
      });
    }
    // Step-level loss (as workers publish it over NATS): 4 steps per epoch.
    for (let k = 1; k <= 24; k++)
      apply({
        step: {
          cellId: id,
          worker: 'w',
          epoch: Math.floor((k - 1) / 4),
          step: ((k - 1) % 4) + 1,
          stepsPerEpoch: 4,
          loss: 2 / k + top,
          imagesPerSec: 10,
          etaMs: 0,
          epochs: 6,
        },
      });
    const confusion = [
      [8, 2],
      [top > 0.5 ? 1 : 5, top > 0.5 ? 9 : 5],
    ].map((r) => ConfusionRow.fromPartial({ counts: r }));
    apply({
      cell: {
        cellId: id,
        spec: CellSpec.fromPartial({ dataset: 'demo', color, strategy, model: 'resnet18', seed: 0, epochs: 6 }),
        state: 'done',
        attempts: 1,
        worker: 'w',
        bestValAccuracy: top,
        bestEpoch: 4,
        classes: ['cat', 'dog'],
        confusion,
        perClassAccuracy: [0.8, top],
        valLabels,
        valPredictions: valLabels.map((l, i) => (i < top * 40 ? l : 1 - l)),
        valSetHash: 'val-40',
      },
    });
  }
  const { app } = buildApp({ state });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/`;
  const artifacts = path.join(REPO_ROOT, 'test-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const page = await browser!.newPage({ viewport: { width: 1300, height: 1100 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(`${base}#/sweep/ui`);
  await page.waitForSelector('#cells tr.cell >> nth=3');
  // The comparison table as a user reads it is the API's, and names the winners the data imply.
  await page.waitForSelector('#table td.verdict');
  const table = (await (await fetch(`${base}api/sweeps/ui/table?format=json`)).json()) as ResultsTable;
  expect(table.rows.map((r) => [r.color, r.winner, r.verdict])).toEqual([
    ['rgb', 'finetune', 'finetune (McNemar p = 0.00049)'],
    ['gray', 'freeze', 'freeze (McNemar p = 0.00049)'],
  ]);
  await expectTableShowsApi(page, table);
  // Choose finetune and freeze on rgb: one chart, both series, a legend entry each, real axes.
  await page.click('#cells tr.cell[data-cell="c0"]');
  await page.click('#cells tr.cell[data-cell="c1"]');
  await page.waitForSelector('#overlay .uplot');
  await page.waitForFunction(() => document.querySelectorAll('#overlay .u-legend .u-series').length === 3);
  const legend = await page.$$eval('#overlay .u-legend .u-series .u-label', (l) => l.map((x) => x.textContent));
  expect(legend).toEqual(['epoch', 'demo rgb finetune s0', 'demo rgb freeze s0']);
  expect(await page.$$eval('#overlay .u-axis', (l) => l.length)).toBe(2);
  expect(await page.textContent('#overlay .u-title')).toBe('val accuracy');
  expect(await page.getAttribute('#overlay', 'data-points')).toBe('6');
  // The plotted values are the API's for those cells (which are the epochs' values sent), at epochs 1..6.
  const detail = async (id: string): Promise<CellDetail> =>
    (await (await fetch(`${base}api/cells/${id}`)).json()) as CellDetail;
  const chosen = [await detail('c0'), await detail('c1')];
  expect(chosen[0]!.curves.map((p) => p.valAccuracy)).toEqual([2, 3, 4, 5, 6, 6].map((k) => 0.9 * (k / 6)));
  expect(await plotted(page, 'overlay')).toEqual([
    [1, 2, 3, 4, 5, 6],
    ...chosen.map((c) => c.curves.map((p) => p.valAccuracy)),
  ]);
  expect(await plotted(page, 'loss')).toEqual([
    chosen[0]!.steps.map((p) => p.x),
    ...chosen.map((c) => c.steps.map((p) => p.loss)),
  ]);
  // Step-level loss where the workers published it: 24 steps on a shared x axis of epochs elapsed.
  expect(await page.textContent('#loss .u-title')).toBe('train loss per step');
  expect(await page.getAttribute('#loss', 'data-points')).toBe('24');
  // The selection is in the URL: a reload (or a shared link) shows the same view.
  expect(new URL(page.url()).hash).toBe('#/sweep/ui?cells=c0%2Cc1');
  // Heat maps: counts, then the normalised view (also kept in the URL).
  expect(await page.$$eval('#heatmaps figure.heatmap', (l) => l.length)).toBe(2);
  expect(await page.textContent('#heatmaps figure.heatmap >> nth=0 >> td.heat >> nth=0')).toBe('8');
  await page.check('#norm');
  await page.waitForFunction(() => document.querySelector('#heatmaps td.heat')?.textContent === '80%');
  expect(new URL(page.url()).hash).toContain('norm=1');
  expect(await page.$$eval('#per-class tr', (l) => l.length)).toBe(3);
  await page.screenshot({ path: path.join(artifacts, 'dashboard-overlay.png'), fullPage: true });
  // Sorting: best val descending, then filtering by words.
  // Each click re-renders the header: the second waits for the first's (a click on the old header
  // while it is being replaced would be lost under load).
  await page.click('#cells th[data-key="bestValAccuracy"]');
  await page.waitForSelector('#cells th[data-key="bestValAccuracy"][aria-sort="ascending"]');
  await page.click('#cells th[data-key="bestValAccuracy"]');
  await page.waitForSelector('#cells th[data-key="bestValAccuracy"][aria-sort="descending"]');
  const order = async (): Promise<string[]> =>
    page.$$eval('#cells tr.cell:not([hidden])', (l) => l.map((tr) => (tr as HTMLElement).dataset['cell']!));
  expect(await order()).toEqual(['c0', 'c3', 'c1', 'c2']);
  expect(await page.getAttribute('#cells th[data-key="bestValAccuracy"]', 'aria-sort')).toBe('descending');
  await page.fill('#filter', 'gray');
  await page.waitForFunction(() => document.querySelectorAll('#cells tr.cell:not([hidden])').length === 2);
  expect(await order()).toEqual(['c3', 'c2']);
  // Keyboard: a row is reachable with Tab and selected with Enter.
  await page.focus('#cells tr.cell[data-cell="c3"]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('#overlay .u-legend .u-series').length === 4);
  const hash = new URL(page.url()).hash;
  expect(hash).toContain('cells=c0%2Cc1%2Cc3');
  expect(hash).toContain('sort=bestValAccuracy%3Adesc');
  expect(hash).toContain('q=gray');
  // The URL alone restores everything.
  const again = await browser!.newPage({ viewport: { width: 1300, height: 1100 } });
  await again.goto(`${base}${hash}`);
  await again.waitForFunction(() => document.querySelectorAll('#overlay .u-legend .u-series').length === 4);
  expect(
    await again.$$eval('#cells tr.cell:not([hidden])', (l) => l.map((tr) => (tr as HTMLElement).dataset['cell']!)),
  ).toEqual(['c3', 'c2']);
  expect(await again.isChecked('#norm')).toBe(true);
  await again.close();
  // Dark mode follows the system setting.
  expect(await page.getAttribute('#overlay', 'data-scheme')).toBe('light');
  await page.emulateMedia({ colorScheme: 'dark' });
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(bg).toBe('rgb(18, 20, 23)');
  // The charts are redrawn in the dark palette (axis text light on dark).
  await page.waitForFunction(() => document.getElementById('overlay')?.dataset['scheme'] === 'dark');
  expect(await page.$$eval('#overlay .u-legend .u-series', (l) => l.length)).toBe(4);
  await page.screenshot({ path: path.join(artifacts, 'dashboard-dark.png'), fullPage: true });
  // A phone: nothing wider than the screen except inside the scrolling table boxes.
  const phone = await browser!.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.goto(`${base}${hash}`);
  await phone.waitForSelector('#overlay .uplot');
  expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  await phone.screenshot({ path: path.join(artifacts, 'dashboard-phone.png'), fullPage: true });
  await phone.close();
  expect(errors).toEqual([]);
  await page.close();
  await app.close();
});
