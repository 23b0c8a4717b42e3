#!/usr/bin/env node
// bench/scheduler: a 10,000-cell sweep through a real coordinator (gRPC on loopback, SQLite in WAL)
// with instant fake workers: expansion time, submit (expansion + persistence) time, and dispatch
// overhead per cell (poll -> start -> complete, all persisted). One JSON line.
// usage: node bench/scheduler/run.mjs [--seeds 100] [--workers 8]
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Coordinator, parseSweep } from '@ferry/coordinator';
import { adminClient, coordinatorClient, getSweepAll, unary } from '@ferry/client';
import { CellResult } from '@ferry/protocol';

const { values } = parseArgs({
  options: { seeds: { type: 'string', default: '100' }, workers: { type: 'string', default: '8' } },
});
const seeds = Array.from({ length: Number(values.seeds) }, (_, i) => i);
const yaml = `name: big
datasets: [{ name: a, path: a }, { name: b, path: b }, { name: c, path: c }, { name: d, path: d }, { name: e, path: e }]
colors: [rgb, gray]
strategies: [finetune, freeze]
models: [resnet18, resnet34, resnet50, mobilenet_v2, resnet_tiny]
seeds: [${seeds.join(', ')}]
`;
let t = performance.now();
const sweep = parseSweep(yaml);
const expandMs = performance.now() - t;

const coordinator = await Coordinator.create({
  stateDir: mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-sched-')),
  listen: '127.0.0.1:0',
  leaseMs: 60_000,
  heartbeatIntervalMs: 5_000,
});
const address = await coordinator.run();
const conn = { address };
const admin = adminClient(conn);
t = performance.now();
const sub = await unary(
  admin.submitSweep,
  admin,
  { yaml, fileName: 'big.yaml', datasetFingerprints: {}, maxAttempts: 0 },
  conn,
  120_000,
);
const submitMs = performance.now() - t;

const result = CellResult.fromPartial({ bestValAccuracy: 0.5, bestEpoch: 0, wallMs: 1, imagesPerSec: 1 });
let dispatched = 0;
async function fakeWorker(i) {
  const client = coordinatorClient(conn);
  const reg = await unary(
    client.register,
    client,
    {
      workerId: `fake-${i}`,
      name: `fake-${i}`,
      capabilities: { backend: 'none', device: 'none', memoryBytes: 0, ferryVersion: '0', host: 'bench', gpuIndex: -1 },
      running: [],
    },
    conn,
    10_000,
  );
  for (;;) {
    const a = await unary(
      client.poll,
      client,
      { workerId: `fake-${i}`, sessionId: reg.sessionId, waitMs: 200 },
      conn,
      10_000,
    );
    if (!a.hasAssignment) break;
    await unary(
      client.start,
      client,
      { attemptId: a.attemptId, datasetFingerprint: 'same', fileCount: 0 },
      conn,
      10_000,
    );
    await unary(client.complete, client, { attemptId: a.attemptId, result }, conn, 10_000);
    dispatched++;
  }
  client.close();
}
t = performance.now();
await Promise.all(Array.from({ length: Number(values.workers) }, (_, i) => fakeWorker(i)));
const dispatchMs = performance.now() - t - 200; // the last empty long-poll waits 200 ms
const status = await getSweepAll(admin, conn, sub.sweepId, { withResults: false, timeoutMs: 60_000 });
admin.close();
await coordinator.shutdown();
console.log(
  JSON.stringify({
    bench: 'scheduler',
    cells: sweep.cells.length,
    fake_workers: Number(values.workers),
    expand_ms: +expandMs.toFixed(1),
    submit_ms: +submitMs.toFixed(1),
    dispatched,
    done: status.done,
    dispatch_total_ms: +dispatchMs.toFixed(0),
    dispatch_ms_per_cell: +(dispatchMs / dispatched).toFixed(3),
    goals: { expand_and_persist_ms: 2000, dispatch_ms_per_cell: 5 },
  }),
);
