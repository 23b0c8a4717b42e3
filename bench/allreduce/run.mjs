#!/usr/bin/env node
// bench/allreduce: ring all-reduce between data-parallel ranks on loopback, for 10 MB and 45 MB
// buffers (ResNet18's gradients are about 45 MB) and 2, 3, 4 ranks, each rank in its own thread
// (own event loop, own ring-link server), next to the raw transport measured in the same run: a
// plain TCP stream of the same bytes between two threads. Every run is reported (min, median,
// max), not only the best. One JSON line per case.
// usage: node bench/allreduce/run.mjs [--ranks 2,3,4] [--mb 10,45] [--repeat 5]
import net from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ringAllReduceSum } from '@ferry/core';
import { PeerRing, PeerServer } from '@ferry/worker';

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
  let rawServer;
  let addr = await server.start();
  if (role === 'recv') {
    // The raw baseline: a TCP server that counts bytes and answers one byte per stream's end.
    rawServer = net.createServer((s) => {
      s.on('data', () => undefined);
      s.on('end', () => s.end(Buffer.alloc(1)));
    });
    await new Promise((r) => rawServer.listen(0, '127.0.0.1', r));
    addr = `127.0.0.1:${rawServer.address().port}`;
  }
  parentPort.postMessage(addr);
  const { addrs } = await once(parentPort);
  if (role === 'ring') {
    const times = [];
    // One ring for every run, as a training cell keeps one for all its steps.
    const ring = new PeerRing(rank, k, 'g', addrs[(rank + 1) % k], server, 'bench-group-secret');
    for (let r = 0; r < repeat; r++) {
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
    }
    await ring.close();
    parentPort.postMessage(times);
  } else if (role === 'send') {
    const chunk = Buffer.alloc(1 << 20, 7);
    const chunks = Math.round((n * 4) / chunk.length);
    const times = [];
    for (let r = 0; r < repeat; r++) {
      const t0 = performance.now();
      await rawTcp(addrs[1], chunk, chunks);
      times.push(performance.now() - t0);
    }
    parentPort.postMessage(times);
  } else {
    // receiver: counts the raw stream's bytes, serving until told to stop
    parentPort.postMessage([]);
    await once(parentPort);
    rawServer?.close();
  }
  await server.stop();
  process.exit(0);
}

/** `chunks` writes of `chunk` on one TCP connection, until the receiver has read them all. */
function rawTcp(address, chunk, chunks) {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port: Number(port) }, () => {
      let i = 0;
      const pump = () => {
        while (i < chunks) {
          i++;
          if (!s.write(chunk)) return s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
    s.on('data', () => resolve());
    s.on('error', reject);
  });
}

const { values } = parseArgs({
  options: {
    ranks: { type: 'string', default: '2,3,4' },
    mb: { type: 'string', default: '10,45' },
    repeat: { type: 'string', default: '5' },
  },
});
const url = new URL(import.meta.url);
async function group(roles, n, repeat) {
  const ws = roles.map((role, rank) => new Worker(url, { workerData: { role, rank, k: roles.length, n, repeat } }));
  // Listened for from the start: a thread may exit before the main thread would ask.
  for (const w of ws) w.exited = new Promise((r) => w.once('exit', r));
  const addrs = await Promise.all(ws.map(once));
  ws.forEach((w) => w.postMessage({ addrs }));
  return ws;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x) => +x.toFixed(1);

for (const mb of values.mb.split(',').map(Number)) {
  const n = Math.round((mb * 1024 * 1024) / 4);
  const repeat = Number(values.repeat);
  // Raw stream: thread 0 sends to thread 1.
  const rawWs = await group(['send', 'recv'], n, repeat);
  // Both listeners at once: a message that comes while nobody listens is lost.
  const [rawTimes] = await Promise.all([once(rawWs[0]), once(rawWs[1])]);
  rawWs[1].postMessage('stop');
  await Promise.all(rawWs.map((w) => w.exited));
  const rawBytes = Math.round((n * 4) / (1 << 20)) * (1 << 20);
  const raw = rawBytes / (median(rawTimes) / 1000);
  for (const k of values.ranks.split(',').map(Number)) {
    const ws = await group(Array(k).fill('ring'), n, repeat);
    for (let r = 0; r < repeat; r++) {
      await Promise.all(ws.map(once)); // all ready
      ws.forEach((w) => w.postMessage('go'));
    }
    const times = await Promise.all(ws.map(once));
    await Promise.all(ws.map((w) => w.exited));
    // A run takes as long as its slowest rank.
    const perRun = times[0].map((_, i) => Math.max(...times.map((t) => t[i])));
    const ms = median(perRun);
    const bytes = n * 4;
    const bus = (((2 * (k - 1)) / k) * bytes) / (ms / 1000);
    console.log(
      JSON.stringify({
        bench: 'allreduce',
        transport: 'tcp',
        ranks: k,
        buffer_mb: mb,
        runs: perRun.length,
        ms: round(ms),
        ms_min: round(Math.min(...perRun)),
        ms_max: round(Math.max(...perRun)),
        runs_ms: perRun.map(round),
        algo_mb_per_s: round(bytes / (ms / 1000) / 1e6),
        bus_mb_per_s: round(bus / 1e6),
        raw_stream_mb_per_s: round(raw / 1e6),
        raw_runs_ms: rawTimes.map(round),
        bus_vs_raw: +(bus / raw).toFixed(3),
        cpus: os.availableParallelism(),
      }),
    );
  }
}
