import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { writeDemoDataset } from '@ferry/core';
import { adminClient, unary } from '@ferry/client';
import { freePort, getSweep, kill, startCoordinator, waitFor, type Proc } from './helpers/cluster.js';
import { REPO_ROOT } from './helpers/torch-ref.js';

/**
 * Several "hosts" on one machine: the coordinator in the root network namespace on a bridge, two
 * workers in their own namespaces (ip netns + veth, iproute2), talking over real addresses with TLS
 * and a token. Cutting one worker's link mid-sweep moves its cell to the other worker.
 */
const id = String(process.pid % 10000);
const BR = `fbr${id}`;
const NS = [`fw1-${id}`, `fw2-${id}`];
const VETH = [`fv1-${id}`, `fv2-${id}`];
const HOST = '10.231.0.1';
const WORKER_IP = ['10.231.0.11', '10.231.0.12'];
const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-mh-'));
const procs: Proc[] = [];

beforeAll(() => {
  sh(`ip link add ${BR} type bridge && ip addr add ${HOST}/24 dev ${BR} && ip link set ${BR} up`);
  NS.forEach((ns, i) => {
    sh(`ip netns add ${ns}`);
    sh(`ip link add ${VETH[i]} type veth peer name ${VETH[i]}p`);
    sh(`ip link set ${VETH[i]}p netns ${ns} && ip link set ${VETH[i]} master ${BR} && ip link set ${VETH[i]} up`);
    sh(
      `ip netns exec ${ns} ip addr add ${WORKER_IP[i]}/24 dev ${VETH[i]}p && ip netns exec ${ns} ip link set ${VETH[i]}p up && ip netns exec ${ns} ip link set lo up`,
    );
  });
});

afterAll(async () => {
  for (const p of procs.splice(0)) await kill(p);
  for (const ns of NS) sh(`ip netns del ${ns} 2>/dev/null || true`);
  sh(`ip link del ${BR} 2>/dev/null || true`);
});

test('coordinator and two workers on separate network namespaces, TLS + token; a cut link moves the cell', async () => {
  const dir = tmp();
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=ferry-coordinator',
      '-addext',
      `subjectAltName=IP:${HOST}`,
    ],
    { stdio: 'ignore' },
  );
  const token = 'multi-host-token';
  const port = await freePort();
  const coord = await startCoordinator([
    '--listen',
    `${HOST}:${port}`,
    '--state',
    tmp(),
    '--tls-cert',
    cert,
    '--tls-key',
    key,
    '--token',
    token,
    '--lease-ms',
    '3000',
    '--heartbeat-ms',
    '300',
  ]);
  procs.push(coord);
  const dataRoot = tmp();
  await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 24, valPerClass: 8, size: 32, seed: 9 });
  const bin = path.join(REPO_ROOT, 'packages/cli/bin/ferry.js');
  const workers = NS.map((ns, i) => {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        bin,
        'worker',
        '--coordinator',
        `${HOST}:${port}`,
        '--tls-ca',
        cert,
        '--token',
        token,
        '--name',
        `host${i + 1}`,
        '--data-root',
        dataRoot,
        '--work-dir',
        tmp(),
        '--backend',
        'wasm',
        '--threads',
        '1',
        '--poll-ms',
        '300',
        '--peer-host',
        WORKER_IP[i]!,
        '--insecure-peer',
      ],
      { env: { ...process.env, FERRY_WASM_THREADS: '1', FERRY_CACHE: tmp() }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const p: Proc = { child, log: () => log, exited: new Promise((r) => child.on('exit', r)) };
    procs.push(p);
    return p;
  });
  const conn = { address: `${HOST}:${port}`, token, tls: { ca: cert } };
  // Without the token, over TLS, the coordinator refuses.
  await expect(getSweep({ address: conn.address, tls: { ca: cert } }, 'x')).rejects.toMatchObject({ code: 16 });
  const admin = adminClient(conn);
  const sub = await unary(
    admin.submitSweep,
    admin,
    {
      yaml: `name: mh\ndatasets: [{ name: demo, path: demo }]\ncolors: [rgb, gray]\nstrategies: [finetune]\nmodels: [resnet_tiny]\nhyper: { weights: none, epochs: 8, batchSize: 16, lr: 0.02, imageSize: 32 }\n`,
      fileName: 'mh.yaml',
      datasetFingerprints: {},
      maxAttempts: 3,
    },
    conn,
    10_000,
  );
  admin.close();
  const victim = await waitFor('a cell on host1 past epoch 2', 90_000, async () =>
    (await getSweep(conn, sub.sweepId)).cells.find(
      (c) => c.state === 'running' && c.worker === 'host1' && c.checkpointEpochs >= 2,
    ),
  );
  sh(`ip link set ${VETH[0]} down`);
  const done = await waitFor(
    'the sweep to finish on host2',
    150_000,
    async () => {
      const s = await getSweep(conn, sub.sweepId);
      return s.done === 2 ? s : undefined;
    },
    500,
  );
  const moved = done.cells.find((c) => c.cellId === victim.cellId)!;
  expect(moved.attempts).toBe(2);
  expect(moved.result!.resumedFromEpoch).toBeGreaterThanOrEqual(2);
  expect(workers[1]!.log()).toContain(`cell ${victim.cellId}`);
});
