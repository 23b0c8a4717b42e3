#!/usr/bin/env node
// bench/events: events per second from 8 simulated workers through a real nats-server (JetStream)
// into the dashboard's state, and publish -> browser latency (headless Chromium on the dashboard's
// server-sent events; p50/p99). One JSON line.
// usage: node bench/events/run.mjs [--workers 8] [--events 5000] [--probes 100]
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { startDashboard } from '@ferry/dashboard';
import { EventPublisher } from '@ferry/events';
import { FerryEvent, SUBJECTS } from '@ferry/protocol';

const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '8' },
    events: { type: 'string', default: '5000' },
    probes: { type: 'string', default: '100' },
  },
});
const W = Number(values.workers);
const N = Number(values.events);
const P = Number(values.probes);
const port = await new Promise((r) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => r(p));
  });
});
const nats = spawn(
  '/usr/sbin/nats-server',
  ['-js', '-sd', mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-nats-')), '-a', '127.0.0.1', '-p', String(port)],
  { stdio: 'ignore' },
);
for (;;) {
  const ok = await new Promise((r) => {
    const c = connect(port, '127.0.0.1', () => {
      c.end();
      r(true);
    });
    c.on('error', () => r(false));
  });
  if (ok) break;
  await new Promise((r) => setTimeout(r, 50));
}
const url = `nats://127.0.0.1:${port}`;
const dash = await startDashboard({ listen: '127.0.0.1:0', nats: { url } });
const step = (sweep, cell, i) =>
  FerryEvent.fromPartial({
    sweepId: sweep,
    time: new Date().toISOString(),
    step: {
      cellId: cell,
      worker: 'w',
      epoch: 0,
      step: i,
      stepsPerEpoch: N,
      loss: 1,
      imagesPerSec: 100,
      etaMs: 0,
      epochs: 1,
    },
  });

// Throughput: W publishers, N events each, as fast as they go.
const pubs = Array.from({ length: W }, () => new EventPublisher({ target: { url }, bufferLimit: N * 2 }));
await new Promise((r) => setTimeout(r, 500));
const before = dash.state.events;
const t0 = performance.now();
for (let i = 0; i < N; i++)
  for (let w = 0; w < W; w++) pubs[w].publish(SUBJECTS.step('bench', `w${w}`), step('bench', `w${w}`, i));
while (dash.state.events - before < N * W) await new Promise((r) => setTimeout(r, 5));
const seconds = (performance.now() - t0) / 1000;

// Latency to a browser: probes published one by one while the page listens to /api/events.
const browser = await chromium.launch({
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
const page = await browser.newPage();
await page.goto(dash.url);
await page.evaluate(() => {
  window.seen = {};
  const es = new EventSource('/api/events');
  es.onmessage = (m) => {
    const now = Date.now();
    for (const c of JSON.parse(m.data).cells) window.seen[c] ??= now;
  };
  return new Promise((r) => (es.onopen = r));
});
const sentAt = {};
for (let i = 0; i < P; i++) {
  const cell = `probe${i}`;
  sentAt[cell] = Date.now();
  pubs[0].publish(SUBJECTS.step('probe', cell), step('probe', cell, i));
  await new Promise((r) => setTimeout(r, 50));
}
await new Promise((r) => setTimeout(r, 1000));
const seen = await page.evaluate(() => window.seen);
const lat = Object.keys(sentAt)
  .filter((c) => seen[c])
  .map((c) => seen[c] - sentAt[c])
  .sort((a, b) => a - b);
const q = (f) => lat[Math.min(lat.length - 1, Math.floor(f * lat.length))];
await browser.close();
for (const p of pubs) await p.close();
await dash.stop();
nats.kill('SIGTERM');
console.log(
  JSON.stringify({
    bench: 'events',
    publishers: W,
    events: N * W,
    events_per_sec: Math.round((N * W) / seconds),
    probes: P,
    probes_seen: lat.length,
    latency_ms_p50: q(0.5),
    latency_ms_p99: q(0.99),
    note: 'latency includes the dashboard push interval (changes merged every 250 ms)',
  }),
);
