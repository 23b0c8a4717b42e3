import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Network, buildModel, writeDemoDataset, writeNpy, writeSafetensors } from '@ferry/core';
import { adminClient, coordinatorClient, metadataFor, unary, type ConnectionOptions } from '@ferry/client';
import { AdminService, CellResult, CoordinatorService } from '@ferry/protocol';
import { ferry } from './helpers/cli.js';
import {
  getSweep,
  kill,
  startCoordinator,
  startNats,
  startWorker,
  submit,
  waitFor,
  type Proc,
} from './helpers/cluster.js';
import { REPO_ROOT } from './helpers/torch-ref.js';

/**
 * The bad-input suite: a careless user's and a hostile client's inputs, across the CLI, sweep files,
 * weight files, images, every gRPC method (random bytes) and the dashboard's HTTP routes. Each case
 * asserts the error code and that the message says what to do; after each one the coordinator, the
 * worker and the dashboard answer their health probes and the finished sweep they hold is unchanged.
 */
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-bad-'));
const TOKEN = 'coordinator-token-0123456789';
const DASH_TOKEN = 'dashboard-token-0123456789';
const procs: Proc[] = [];
let dataRoot = '';
let conn: ConnectionOptions = { address: '' };
let dashboardUrl = '';
let workerDir = '';
let keeper: { sweepId: string; result: CellResult | undefined; sweeps: number } = {
  sweepId: '',
  result: undefined,
  sweeps: 0,
};

const yamlOf = (name: string, dataset: string, weights = 'none'): string =>
  `name: ${name}\ndatasets: [{ name: ${dataset}, path: ${dataset} }]\ncolors: [rgb]\nstrategies: [finetune]\nmodels: [resnet_tiny]\nhyper: { weights: ${weights}, epochs: 1, batchSize: 16, imageSize: 32 }\n`;

async function sweeps(): Promise<number> {
  const admin = adminClient(conn);
  try {
    return (await unary(admin.listSweeps, admin, {}, conn, 5_000)).sweeps.length;
  } finally {
    admin.close();
  }
}

beforeAll(async () => {
  dataRoot = tmp();
  await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 8, valPerClass: 4, size: 32, seed: 5 });
  const nats = await startNats(tmp());
  procs.push(nats);
  const coord = await startCoordinator(
    [
      '--listen',
      '127.0.0.1:0',
      '--state',
      tmp(),
      '--token',
      TOKEN,
      '--nats',
      nats.url,
      '--max-attempts',
      '1',
      '--lease-ms',
      '6000',
      '--heartbeat-ms',
      '500',
    ],
    { FERRY_MAX_SWEEP_CELLS: '50' },
  );
  procs.push(coord);
  conn = { address: coord.address, token: TOKEN };
  workerDir = tmp();
  // The worker's pixel limit is lowered (10 M) so that a 4,000 x 4,000 image is over it.
  procs.push(
    startWorker(coord.address, {
      name: 'wbad',
      dataRoot,
      workDir: workerDir,
      cacheDir: tmp(),
      extra: ['--token', TOKEN],
      env: { FERRY_MAX_IMAGE_PIXELS: '10000000' },
    }),
  );
  const dash = spawn(
    process.execPath,
    [
      path.join(REPO_ROOT, 'packages/cli/bin/ferry.js'),
      'dashboard',
      '--nats',
      nats.url,
      '--listen',
      '127.0.0.1:0',
      '--token',
      DASH_TOKEN,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  procs.push({
    child: dash,
    exited: new Promise((r) => dash.on('exit', (c) => r(c))),
    log: () => '',
  } as unknown as Proc);
  dashboardUrl = await new Promise<string>((resolve) =>
    createInterface({ input: dash.stdout }).on(
      'line',
      (l) => /^dashboard on (\S+)/.test(l) && resolve(/^dashboard on (\S+)/.exec(l)![1]!),
    ),
  );
  // The finished sweep every case must leave as it is.
  const sweepId = await submit(conn, yamlOf('keeper', 'demo'));
  const done = await waitFor(
    'the keeper sweep',
    120_000,
    async () => {
      const s = await getSweep(conn, sweepId);
      return s.done === 1 ? s : undefined;
    },
    300,
  );
  keeper = { sweepId, result: done.cells[0]!.result, sweeps: await sweeps() };
}, 300_000);

afterAll(async () => {
  for (const p of procs.splice(0).reverse()) await kill(p, 'SIGTERM');
});

/** The probes a deployment runs, and what must not have changed. */
async function assertHealthy(): Promise<void> {
  const s = await getSweep(conn, keeper.sweepId);
  expect(s.done).toBe(1);
  expect(s.cells[0]!.result).toEqual(keeper.result);
  expect(await sweeps()).toBe(keeper.sweeps);
  const r = await fetch(`${dashboardUrl}healthz`);
  expect(r.status).toBe(200);
  // The worker heartbeats (its `ferry health --worker` file is fresh).
  await waitFor(
    'a fresh worker heartbeat',
    5_000,
    async () => (Date.now() - statSync(path.join(workerDir, 'heartbeat')).mtimeMs < 3_000 ? true : undefined),
    100,
  );
}

/** The gRPC error of a call (undefined when it succeeded). */
async function grpcError(p: Promise<unknown>): Promise<grpc.ServiceError | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return e as grpc.ServiceError;
  }
}

describe('the CLI: exit 2, the code, what to do', () => {
  const cases: [string, string[], Record<string, string>, string, string][] = [
    [
      'a limit flag of 0',
      ['--max-image-pixels', '0', 'models'],
      {},
      'FERRY_ERR_INVALID_ARGUMENT',
      'must be a positive integer',
    ],
    [
      'a malformed limit variable',
      ['models'],
      { FERRY_MAX_SWEEP_CELLS: 'many' },
      'FERRY_ERR_INVALID_ARGUMENT',
      'FERRY_MAX_SWEEP_CELLS must be a positive integer',
    ],
    [
      'a missing sweep file',
      ['sweep', 'submit', '/nonexistent/s.yaml', '--coordinator', '127.0.0.1:1'],
      {},
      'FERRY_ERR_INVALID_ARGUMENT',
      'cannot read the sweep file',
    ],
    [
      'an unreachable coordinator',
      ['sweep', 'list', '--coordinator', '127.0.0.1:1'],
      {},
      'FERRY_ERR_UNAVAILABLE',
      'is it running',
    ],
    [
      'an --alpha out of range',
      ['run', path.join(REPO_ROOT, 'examples/demo.yaml'), '--alpha', '2'],
      {},
      'FERRY_ERR_INVALID_ARGUMENT',
      '--alpha must be between 0 and 1',
    ],
    [
      'an unknown model',
      ['predict', '--model', 'resnet19', '--weights', '/nonexistent.pth', '--input', '/nonexistent.npy'],
      {},
      'FERRY_ERR_UNKNOWN_MODEL',
      'what to do: pick one of ferry models',
    ],
    [
      'a sweep over the cell limit',
      ['run', path.join(REPO_ROOT, 'examples/demo.yaml'), '--max-sweep-cells', '1'],
      {},
      'FERRY_ERR_SWEEP_INVALID',
      'a sweep may hold 1 (--max-sweep-cells); split it',
    ],
  ];
  test.each(cases)('%s', async (_what, argv, env, code, fix) => {
    const r = await ferry(argv, env);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`[${code}]`);
    expect(r.stderr).toContain(fix);
    await assertHealthy();
  });

  test('the CLI against the live coordinator: no token, a wrong token, an unknown sweep', async () => {
    const c = ['--coordinator', conn.address];
    for (const [argv, code, fix] of [
      [
        ['sweep', 'list', ...c],
        'FERRY_ERR_UNAUTHENTICATED',
        "what to do: pass the coordinator's --token (or FERRY_TOKEN)",
      ],
      [
        ['sweep', 'list', ...c, '--token', 'wrong'],
        'FERRY_ERR_UNAUTHENTICATED',
        "what to do: pass the coordinator's --token",
      ],
      [
        ['sweep', 'status', 'nope', ...c, '--token', TOKEN],
        'FERRY_ERR_NOT_FOUND',
        'what to do: ferry sweep list shows the sweeps',
      ],
    ] as const) {
      const r = await ferry([...argv]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`[${code}]`);
      expect(r.stderr).toContain(fix);
      await assertHealthy();
    }
  });

  test('.npy inputs: truncated, and over the tensor limit', async () => {
    const dir = tmp();
    const net = Network.create(buildModel('resnet_tiny', 4), { seed: 0 });
    const weights = path.join(dir, 'tiny.safetensors');
    writeFileSync(weights, writeSafetensors(await net.exportState()));
    net.dispose();
    const good = writeNpy(new Float32Array(3 * 32 * 32), [1, 3, 32, 32]);
    writeFileSync(path.join(dir, 'cut.npy'), good.subarray(0, good.length - 10));
    writeFileSync(path.join(dir, 'big.npy'), writeNpy(new Float32Array(3 * 224 * 224), [1, 3, 224, 224]));
    const cut = await ferry([
      'predict',
      '--model',
      'resnet_tiny',
      '--weights',
      weights,
      '--input',
      path.join(dir, 'cut.npy'),
      '--backend',
      'cpu',
    ]);
    expect(cut.code).toBe(2);
    expect(cut.stderr).toContain('(truncated?) [FERRY_ERR_INVALID_ARGUMENT]');
    // 150,528 input elements; resnet_tiny's largest tensor has 36,864, so its weights pass 100,000.
    const big = await ferry([
      'predict',
      '--model',
      'resnet_tiny',
      '--weights',
      weights,
      '--input',
      path.join(dir, 'big.npy'),
      '--backend',
      'cpu',
      '--max-tensor-elements',
      '100000',
    ]);
    expect(big.code).toBe(2);
    expect(big.stderr).toContain(
      'has 150528 elements, more than the 100000 allowed (--max-tensor-elements) [FERRY_ERR_INVALID_ARGUMENT]',
    );
    await assertHealthy();
  });
});

describe('sweep files submitted to the coordinator: INVALID_ARGUMENT, FERRY_ERR_SWEEP_INVALID, the line and what is allowed', () => {
  const base = 'name: bad\ndatasets: [{ name: demo, path: demo }]\nmodels: [resnet_tiny]\n';
  const cases: [string, string, string][] = [
    ['not a mapping', '- a\n- b\n', 'the file must be a YAML mapping'],
    ['not YAML at all', 'name: [unclosed\n', 'at line 2, column 1'],
    [
      'an alias bomb',
      `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n${base}`,
      'alias',
    ],
    ['an oversized file', `${base}# ${'x'.repeat(1100 * 1024)}\n`, 'a sweep file may hold 1048576 (--max-sweep-bytes)'],
    [
      'more cells than the coordinator allows',
      `${base}seeds: [${[...Array(60).keys()].join(', ')}]\n`,
      'a sweep may hold 50 (--max-sweep-cells)',
    ],
    ['an unknown model', base.replace('resnet_tiny', 'resnet19'), '"resnet19" is not allowed; use resnet18'],
    ['an unknown strategy', `${base}strategies: [melt]\n`, '"melt" is not a strategy'],
    ['a colour with markup', `${base}colors: [<b>purple</b>]\n`, 'is not allowed; use rgb, gray'],
    ['a fractional negative seed', `${base}seeds: [-7.5]\n`, 'must be an integer >= 0'],
    ['weights outside the data root', `${base}hyper: { weights: /etc/shadow }\n`, 'weights'],
    ['a dataset path that climbs out', base.replace('path: demo', 'path: ../../etc'), 'path'],
    ['an unknown hyper-parameter', `${base}hyper: { epocs: 3 }\n`, 'unknown setting; allowed: weights, epochs'],
    ['a negative learning rate', `${base}hyper: { lr: -1 }\n`, 'hyper.lr: out of range (got -1)'],
    [
      'an include naming a missing dataset',
      `${base}include:\n  - { dataset: ghost, color: rgb, strategy: finetune, model: resnet_tiny, seed: 0 }\n`,
      'no dataset named ghost',
    ],
  ];
  test.each(cases)('%s', async (_what, yaml, fix) => {
    const admin = adminClient(conn);
    try {
      const e = await grpcError(
        unary(
          admin.submitSweep,
          admin,
          { yaml, fileName: 'bad.yaml', datasetFingerprints: {}, maxAttempts: 0 },
          conn,
          10_000,
        ),
      );
      expect(e?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e?.details).toContain('[FERRY_ERR_SWEEP_INVALID]');
      expect(e?.details).toContain(fix);
    } finally {
      admin.close();
    }
    await assertHealthy();
  });
});

describe('weight files and images reach a worker: the cell ends with the code, the worker keeps serving', () => {
  /** Submits a one-cell sweep and resolves with its cell once it carries an error. */
  async function cellError(name: string, dataset: string, weights = 'none'): Promise<string> {
    const sweepId = await submit(conn, yamlOf(name, dataset, weights));
    keeper.sweeps++;
    return waitFor(
      `${name} to fail`,
      60_000,
      async () => (await getSweep(conn, sweepId)).cells[0]!.error || undefined,
      300,
    );
  }

  test.each([
    [
      'a truncated .safetensors',
      'trunc.safetensors',
      (good: Buffer) => good.subarray(0, good.length - 7),
      'FERRY_ERR_WEIGHTS_CORRUPT',
    ],
    [
      'a .safetensors whose offsets point outside its data',
      'offsets.safetensors',
      () => {
        const h = Buffer.from(
          JSON.stringify({ 'fc.weight': { dtype: 'F32', shape: [4], data_offsets: [0, 1 << 20] } }),
        );
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(h.length));
        return Buffer.concat([len, h, Buffer.alloc(16)]);
      },
      'FERRY_ERR_WEIGHTS_CORRUPT',
    ],
    ['random bytes named .pth', 'noise.pth', () => randomBytes(4096), 'FERRY_ERR_WEIGHTS_CORRUPT'],
  ])('%s', async (what, file, make, code) => {
    const good = writeSafetensors(
      new Map([['fc.weight', { dtype: 'float32', shape: [2, 2], data: new Float32Array(4) }]]) as never,
    );
    mkdirSync(path.join(dataRoot, 'weights'), { recursive: true });
    writeFileSync(path.join(dataRoot, 'weights', file), make(good));
    const error = await cellError(`w${file.replace(/\W/g, '')}`, 'demo', `weights/${file}`);
    expect(error, what).toContain(code);
    expect(error).toContain(file);
    await assertHealthy();
  });

  // An unreadable image is skipped, never fatal: the cell finishes, its result names the file and
  // the reason (the worker's log has it as a warning when it happens).
  test.each([
    ['a truncated PNG', async (f: string) => writeFileSync(f, readFileSync(f).subarray(0, 40)), ''],
    [
      'an image over the pixel limit',
      async (f: string) => {
        writeFileSync(
          f,
          await sharp({ create: { width: 4000, height: 4000, channels: 3, background: '#000' } })
            .png({ compressionLevel: 9 })
            .toBuffer(),
        );
      },
      'more than 10000000 pixels; resize it first, or raise --max-image-pixels',
    ],
  ])('%s', async (_what, corrupt, fix) => {
    const name = `img${Math.random().toString(36).slice(2, 8)}`;
    await writeDemoDataset(path.join(dataRoot, name), { trainPerClass: 4, valPerClass: 2, size: 32, seed: 9 });
    const classDir = path.join(dataRoot, name, 'train');
    const cls = readdirSync(classDir)[0]!;
    const victim = path.join(classDir, cls, readdirSync(path.join(classDir, cls))[0]!);
    await corrupt(victim);
    const sweepId = await submit(conn, yamlOf(name, name));
    keeper.sweeps++;
    const cell = await waitFor(
      `${name} to finish`,
      60_000,
      async () => {
        const c = (await getSweep(conn, sweepId)).cells[0]!;
        return c.state === 'done' || c.state === 'failed' ? c : undefined;
      },
      300,
    );
    expect(cell.state, cell.error).toBe('done');
    const skipped = cell.result!.skipped;
    expect(skipped.map((x) => x.file)).toEqual([victim]);
    expect(skipped[0]!.reason).toContain(fix);
    await assertHealthy();
  });
});

describe('gRPC: every method answers random bytes with a status, never a crash', () => {
  // Every method of the services, from their generated definitions: a method added later is covered.
  const methods = [CoordinatorService, AdminService].flatMap((service) =>
    Object.values(service).map(
      (m) => [m.requestStream ? 'clientStream' : m.responseStream ? 'serverStream' : 'unary', m.path] as const,
    ),
  );
  test.each(methods)('%s %s', async (kind, method) => {
    const client = new grpc.Client(conn.address, grpc.credentials.createInsecure());
    const id = (b: Buffer): Buffer => b;
    try {
      for (let i = 0; i < 3; i++) {
        // Valid protobuf framing is not required: half the payloads are noise, half are a field
        // header followed by noise (so the decoder gets past the first byte).
        const payload = i % 2 ? Buffer.concat([Buffer.from([0x0a, 0x40]), randomBytes(64)]) : randomBytes(48 + i);
        const deadline = Date.now() + 3_000;
        const md = metadataFor(conn);
        const code = await new Promise<number>((resolve) => {
          if (kind === 'unary') {
            client.makeUnaryRequest(method, id, id, payload, md, { deadline }, (e) => resolve(e ? e.code : 0));
          } else if (kind === 'clientStream') {
            const call = client.makeClientStreamRequest(method, id, id, md, { deadline }, (e) =>
              resolve(e ? e.code : 0),
            );
            call.write(payload);
            call.end();
          } else {
            const call = client.makeServerStreamRequest(method, id, id, payload, md, { deadline });
            call.on('data', () => undefined);
            call.on('error', (e: grpc.ServiceError) => resolve(e.code));
            call.on('end', () => resolve(0));
          }
        });
        // An answer, not silence or a dead server: anything but UNAVAILABLE / DEADLINE_EXCEEDED.
        expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).not.toContain(code);
      }
    } finally {
      client.close();
    }
    await assertHealthy();
  });

  test('a worker call without the token is UNAUTHENTICATED; an attempt nobody holds is refused, not recorded', async () => {
    const c = coordinatorClient(conn);
    try {
      const e = await grpcError(
        unary(
          c.heartbeat,
          c,
          { workerId: 'x', sessionId: 'y', running: [], imagesPerSec: 0 },
          { address: conn.address },
          5_000,
        ),
      );
      expect(e?.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(e?.details).toContain('[FERRY_ERR_UNAUTHENTICATED]');
      const started = await unary(
        c.start,
        c,
        { attemptId: 'made-up', datasetFingerprint: 'f', fileCount: 1 },
        conn,
        5_000,
      );
      expect(started).toEqual({ ok: false, message: 'attempt is not leased' });
      const completed = await unary(
        c.complete,
        c,
        { attemptId: 'made-up', result: CellResult.fromPartial({ bestValAccuracy: 1 }) },
        conn,
        5_000,
      );
      expect(completed.ok).toBe(false);
    } finally {
      c.close();
    }
    await assertHealthy();
  });
});

describe('dashboard requests: a status and a JSON reason, never a 500', () => {
  const auth = { authorization: `Bearer ${DASH_TOKEN}` };
  const cases: [string, string, RequestInit, number, string][] = [
    ['no token', 'api/sweeps', {}, 401, 'missing or wrong token'],
    [
      'a wrong token of the right length',
      'api/sweeps',
      { headers: { authorization: `Bearer ${'x'.repeat(DASH_TOKEN.length)}` } },
      401,
      'missing or wrong token',
    ],
    [
      'a multibyte ?token= of the same length',
      `api/sweeps?token=${encodeURIComponent('é'.repeat(DASH_TOKEN.length / 2))}`,
      {},
      401,
      'missing or wrong token',
    ],
    [
      'a malformed cookie',
      'api/sweeps',
      { headers: { cookie: 'ferry_token=%E0%A4%A' } },
      401,
      'missing or wrong token',
    ],
    ['an unknown sweep', 'api/sweeps/nope', { headers: auth }, 404, 'no such sweep'],
    [
      'markup as a cell id',
      `api/cells/${encodeURIComponent('<script>alert(1)</script>')}`,
      { headers: auth },
      404,
      'no such cell',
    ],
    [
      'an unknown table format',
      `api/sweeps/${'KEEPER'}/table?format=xml`,
      { headers: auth },
      400,
      'format must be json, csv or md',
    ],
    ['a POST to a GET route', 'api/sweeps', { method: 'POST', headers: auth }, 404, ''],
  ];
  test.each(cases)('%s', async (_what, route, init, statusCode, reason) => {
    const r = await fetch(`${dashboardUrl}${route.replace('KEEPER', keeper.sweepId)}`, init);
    expect(r.status).toBe(statusCode);
    expect(await r.text()).toContain(reason);
    await assertHealthy();
  });
});
