import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { coordinatorClient, unary, type ConnectionOptions } from '@ferry/client';
import { HeartbeatThread, type HeartbeatReply } from '../src/heartbeat.js';
import { getSweep, kill, startCoordinator, submit, type Proc } from '../../../test/helpers/cluster.js';

const procs: Proc[] = [];
afterAll(async () => {
  for (const p of procs) await kill(p);
});

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-heartbeat-'));
const LEASE_MS = 1_000;

/** Holds this thread (its event loop, timers, gRPC) as a long synchronous kernel would. */
const block = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

test('heartbeats from their own thread keep a lease while the main thread is held for 4 leases; without them it expires', async () => {
  const coord = await startCoordinator([
    '--listen',
    '127.0.0.1:0',
    '--state',
    tmp(),
    '--lease-ms',
    String(LEASE_MS),
    '--heartbeat-ms',
    '100',
  ]);
  procs.push(coord);
  const conn: ConnectionOptions = { address: coord.address };
  const sweepId = await submit(
    conn,
    'name: hb\ndatasets: [{ name: d, path: d }]\ncolors: [rgb]\nstrategies: [finetune]\nmodels: [resnet18]\nseeds: [0]\n',
  );
  const client = coordinatorClient(conn);
  const workerId = 'w-heartbeat';
  const reg = await unary(client.register, client, { workerId, name: 'hb', running: [] }, conn, 5_000);
  const a = await unary(client.poll, client, { workerId, sessionId: reg.sessionId, waitMs: 1_000 }, conn, 5_000);
  expect(a.hasAssignment).toBe(true);
  await unary(client.start, client, { attemptId: a.attemptId, datasetFingerprint: 'f', fileCount: 1 }, conn, 5_000);

  const heartbeatFile = path.join(tmp(), 'heartbeat');
  const replies: HeartbeatReply[] = [];
  const thread = new HeartbeatThread({ connection: conn, workerId, heartbeatFile }, (r) => replies.push(r));
  thread.update({
    sessionId: reg.sessionId,
    intervalMs: 100,
    running: [{ cellId: a.cellId, attemptId: a.attemptId, epoch: 0 }],
    imagesPerSec: 0,
  });
  block(4 * LEASE_MS);
  const held = (await getSweep(conn, sweepId)).cells[0]!;
  expect(held.state).toBe('running');
  expect(held.attempts).toBe(1);
  // The answers waited for this thread; each was for this session and asked for nothing.
  await expect.poll(() => replies.length).toBeGreaterThan(10);
  expect(replies.every((r) => r.type === 'reply' && r.sessionId === reg.sessionId && !r.reregister)).toBe(true);
  expect(Date.now() - Date.parse(readFileSync(heartbeatFile, 'utf8').trim())).toBeLessThan(2_000);

  // The control: the same hold without the thread loses the lease (the cell goes back to pending).
  await thread.stop();
  block(4 * LEASE_MS);
  await expect.poll(async () => (await getSweep(conn, sweepId)).cells[0]!.state, { timeout: 5_000 }).toBe('pending');
  client.close();
}, 60_000);
