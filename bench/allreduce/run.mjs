#!/usr/bin/env node
// bench/allreduce: ring all-reduce over the workers' Peer gRPC service on loopback, for 10 MB and
// 45 MB buffers (ResNet18's gradients are about 45 MB) and 2, 3, 4 ranks, each rank in its own
// thread (own event loop, own gRPC server), next to a raw grpc-js client stream between two
// threads measured in the same run. One JSON line per case.
// usage: node bench/allreduce/run.mjs [--ranks 2,3,4] [--mb 10,45] [--repeat 3]
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as grpc from '@grpc/grpc-js';
import { ringAllReduceSum } from '@ferry/core';
import { PeerClient } from '@ferry/protocol';
import { GrpcRing, PeerServer } from '@ferry/worker';

const once = (port) => new Promise((r) => port.once('message', r));

/** Rank r's element i: in [-1, 1), a float32. */
function value(r, i) {
  const x = Math.sin(i * 12.9898 + r * 78.233) * 43758.5453;
  return Math.fround((x - Math.floor(x)) * 2 - 1);
}

/**
 * Every element against the float64 sum of the ranks' float32 values. Summing k float32 values in
 * float32, in any order, errs by at most (k - 1) * 2^-24 * sum |v| (each addition rounds once, to
 * half an ulp of a partial sum no larger than sum |v|): the tolerance, per element.
 */
function checkSum(buf, k) {
  for (let i = 0; i < buf.length; i++) {
    let want = 0;
    let abs = 0;
    for (let r = 0; r < k; r++) {
      want += value(r, i);
      abs += Math.abs(value(r, i));
    }
    if (Math.abs(buf[i] - want) > (k - 1) * 2 ** -24 * abs)
      throw new Error(`wrong all-reduce result at element ${i}: ${buf[i]} vs ${want}`);
  }
}

if (!isMainThread) {
  const { role, rank, k, n, repeat } = workerData;
  const server = new PeerServer({ host: '127.0.0.1' });
  const addr = await server.start();
  parentPort.postMessage(addr);
  const { addrs } = await once(parentPort);
  if (role === 'ring') {
    const times = [];
    for (let r = 0; r < repeat; r++) {
      const ring = new GrpcRing(rank, k, `g${r}`, addrs[(rank + 1) % k], server, 'bench-group-secret');
      // Random values (a hash of rank and index, so every thread knows every rank's buffer without
      // holding it): a segment delivered to the wrong offset changes the sums, unlike constant buffers.
      const buf = new Float32Array(n);
      for (let i = 0; i < n; i++) buf[i] = value(rank, i);
      parentPort.postMessage('ready');
      await once(parentPort);
      const t0 = performance.now();
      await ringAllReduceSum(ring, buf, `b${r}`, 120_000);
      times.push(performance.now() - t0);
      checkSum(buf, k);
      await ring.close();
    }
    parentPort.postMessage(times);
  } else if (role === 'send') {
    const client = new PeerClient(addrs[1], grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': 16 << 20,
    });
    const chunk = Buffer.alloc(1 << 20, 7);
    const chunks = Math.round((n * 4) / chunk.length);
    const times = [];
    for (let r = 0; r < repeat; r++) {
      const t0 = performance.now();
      await new Promise((resolve, reject) => {
        const md = new grpc.Metadata();
        md.set('authorization', 'Bearer bench-group-secret');
        md.set('x-ferry-group', `raw${r}`);
        const s = client.ring(md, (e) => (e ? reject(e) : resolve()));
        let i = 0;
        const pump = () => {
          while (i < chunks) {
            i++;
            if (!s.write({ group: `raw${r}`, fromRank: 0, key: `k${i}`, data: chunk })) return s.once('drain', pump);
          }
          s.end();
        };
        pump();
      });
      times.push(performance.now() - t0);
    }
    client.close();
    parentPort.postMessage(times);
  } else {
    // receiver: a member of the sender's groups (chunks are kept, never taken), serving until told to stop
    for (let r = 0; r < repeat; r++) server.join(`raw${r}`, 'bench-group-secret', 0);
    parentPort.postMessage([]);
    await once(parentPort);
  }
  await server.stop();
  process.exit(0);
}

const { values } = parseArgs({
  options: {
    ranks: { type: 'string', default: '2,3,4' },
    mb: { type: 'string', default: '10,45' },
    repeat: { type: 'string', default: '3' },
  },
});
const url = new URL(import.meta.url);
async function group(roles, n, repeat) {
  const ws = roles.map((role, rank) => new Worker(url, { workerData: { role, rank, k: roles.length, n, repeat } }));
  const addrs = await Promise.all(ws.map(once));
  ws.forEach((w) => w.postMessage({ addrs }));
  return ws;
}

for (const mb of values.mb.split(',').map(Number)) {
  const n = Math.round((mb * 1024 * 1024) / 4);
  const repeat = Number(values.repeat);
  // Raw stream: thread 0 sends to thread 1's server.
  const rawWs = await group(['send', 'recv'], n, repeat);
  const rawTimes = await once(rawWs[0]);
  await once(rawWs[1]);
  rawWs[1].postMessage('stop');
  await Promise.all(rawWs.map((w) => new Promise((r) => w.on('exit', r))));
  const raw = (Math.round((n * 4) / (1 << 20)) * (1 << 20)) / (Math.min(...rawTimes) / 1000);
  for (const k of values.ranks.split(',').map(Number)) {
    const ws = await group(Array(k).fill('ring'), n, repeat);
    for (let r = 0; r < repeat; r++) {
      await Promise.all(ws.map(once)); // all ready
      ws.forEach((w) => w.postMessage('go'));
    }
    const times = await Promise.all(ws.map(once));
    await Promise.all(ws.map((w) => new Promise((r) => w.on('exit', r))));
    const best = Math.min(...times.map((t) => Math.max(...t)));
    const perRun = times[0].map((_, i) => Math.max(...times.map((t) => t[i])));
    const ms = Math.min(...perRun);
    const bytes = n * 4;
    const bus = (((2 * (k - 1)) / k) * bytes) / (ms / 1000);
    console.log(
      JSON.stringify({
        bench: 'allreduce',
        ranks: k,
        buffer_mb: mb,
        ms: +ms.toFixed(1),
        algo_mb_per_s: +(bytes / (ms / 1000) / 1e6).toFixed(1),
        bus_mb_per_s: +(bus / 1e6).toFixed(1),
        raw_stream_mb_per_s: +(raw / 1e6).toFixed(1),
        bus_vs_raw: +(bus / raw).toFixed(3),
        cpus: (await import('node:os')).availableParallelism(),
        slowest_rank_ms: +best.toFixed(1),
      }),
    );
  }
}
