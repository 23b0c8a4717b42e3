import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { EventPublisher, EventSubscriber, natsOptions } from '@ferry/events';
import { startDashboard } from '@ferry/dashboard';
import { FerryEvent, SUBJECTS } from '@ferry/protocol';
import { freePort, kill, startNats, waitFor, type Proc } from './helpers/cluster.js';

/** Events over a real nats-server (JetStream, file storage) on a random port. */
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-nats-'));
const procs: Proc[] = [];
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  for (const p of procs.splice(0)) await kill(p);
});

const stepEvent = (i: number): FerryEvent =>
  FerryEvent.fromPartial({
    sweepId: 'sw',
    time: new Date().toISOString(),
    step: {
      cellId: 'c1',
      worker: 'w',
      epoch: 0,
      step: i,
      stepsPerEpoch: 100,
      loss: 1 / (i + 1),
      imagesPerSec: 10,
      etaMs: 0,
      epochs: 1,
    },
  });

describe('NATS events', () => {
  test('credentials are taken from the URL', () => {
    expect(natsOptions({ url: 'nats://alice:s%40cret@host:4333' })).toMatchObject({
      servers: ['host:4333'],
      user: 'alice',
      pass: 's@cret',
    });
    expect(natsOptions({ url: 'nats://tok123@host' })).toMatchObject({ servers: ['host:4222'], token: 'tok123' });
  });

  test('NATS credentials in the URL authenticate publisher and subscriber; wrong ones are refused', async () => {
    const nats = await startNats(tmp(), undefined, ['--user', 'ferry', '--pass', 's3cret']);
    procs.push(nats);
    const authed = nats.url.replace('nats://', 'nats://ferry:s3cret@');
    const pub = new EventPublisher({ target: { url: authed } });
    pub.publish(SUBJECTS.step('sw', 'c1'), stepEvent(7));
    await pub.close();
    const got: number[] = [];
    const sub = new EventSubscriber({ url: authed }, (_s, e) => got.push(e.step!.step));
    await sub.start();
    closers.push(() => sub.stop());
    await waitFor('the authenticated replay', 10_000, async () => (got.length === 1 ? true : undefined));
    expect(got).toEqual([7]);
    await expect(
      connect({ ...natsOptions({ url: nats.url.replace('nats://', 'nats://ferry:wrong@') }), maxReconnectAttempts: 0 }),
    ).rejects.toThrow(/authorization/i);
    await expect(connect({ ...natsOptions({ url: nats.url }), maxReconnectAttempts: 0 })).rejects.toThrow(
      /authorization/i,
    );
  });

  test('published events are kept by JetStream: a subscriber started later replays them all, in order, as JSON any client can read', async () => {
    const nats = await startNats(tmp());
    procs.push(nats);
    const pub = new EventPublisher({ target: { url: nats.url } });
    for (let i = 0; i < 50; i++) pub.publish(SUBJECTS.step('sw', 'c1'), stepEvent(i));
    await pub.close();
    const got: { subject: string; step: number }[] = [];
    const sub = new EventSubscriber({ url: nats.url }, (subject, e) => got.push({ subject, step: e.step!.step }));
    await sub.start();
    closers.push(() => sub.stop());
    await waitFor('the replay', 10_000, async () => (got.length === 50 ? true : undefined));
    expect(got.map((g) => g.step)).toEqual([...Array(50).keys()]);
    expect(got[0]!.subject).toBe('ferry.sw.cell.c1.step');
  });

  test('a publisher that loses NATS keeps going, keeps what JetStream has not acknowledged (bounded) and sends it on reconnect', async () => {
    const port = await freePort();
    const store = tmp();
    let nats = await startNats(store, port);
    procs.push(nats);
    const pub = new EventPublisher({ target: { url: nats.url }, bufferLimit: 30 });
    closers.push(() => pub.close());
    pub.publish(SUBJECTS.step('sw', 'c1'), stepEvent(0));
    // Pending until JetStream acknowledges it.
    expect(pub.pending).toBe(1);
    await waitFor('the acknowledgement', 5_000, async () => (pub.pending === 0 ? true : undefined));
    await kill(nats);
    await waitFor('the publisher to notice', 10_000, async () => (pub.isConnected ? undefined : true), 20);
    // NATS is gone: publish() returns at once, every time.
    const t0 = performance.now();
    for (let i = 1; i <= 100; i++) pub.publish(SUBJECTS.step('sw', 'c1'), stepEvent(i));
    expect(performance.now() - t0).toBeLessThan(200);
    await waitFor('the buffer to hold the newest 30', 5_000, async () => (pub.pending === 30 ? true : undefined));
    expect(pub.dropped).toBeGreaterThanOrEqual(70);
    nats = await startNats(store, port);
    procs.push(nats);
    await waitFor('the flush after reconnecting', 20_000, async () => (pub.pending === 0 ? true : undefined), 200);
    const got: number[] = [];
    const sub = new EventSubscriber({ url: nats.url }, (_s, e) => got.push(e.step!.step));
    await sub.start();
    closers.push(() => sub.stop());
    await waitFor('the replay', 10_000, async () => (got.includes(100) ? true : undefined));
    // The newest 30 of the outage survived, in order, after what was stored before it.
    expect(got.slice(-30)).toEqual([...Array(30).keys()].map((i) => i + 71));
  });

  test('a dashboard started late (or restarted) shows the full history', async () => {
    const nats = await startNats(tmp());
    procs.push(nats);
    const pub = new EventPublisher({ target: { url: nats.url } });
    pub.publish(
      SUBJECTS.sweep('sw'),
      FerryEvent.fromPartial({ sweepId: 'sw', time: '', sweep: { name: 'late', cells: 1, createdAt: '' } }),
    );
    pub.publish(
      SUBJECTS.epoch('sw', 'c1'),
      FerryEvent.fromPartial({
        sweepId: 'sw',
        time: '',
        epoch: { cellId: 'c1', epoch: 0, trainLoss: 0.7, valLoss: 0.8, trainAccuracy: 0.6, valAccuracy: 0.55 },
      }),
    );
    await pub.close();
    for (let round = 0; round < 2; round++) {
      const d = await startDashboard({ listen: '127.0.0.1:0', nats: { url: nats.url } });
      await waitFor('the history', 10_000, async () =>
        d.state.sweeps.get('sw')?.cells.get('c1')?.epochs.length === 1 ? true : undefined,
      );
      const r = await fetch(`${d.url}api/sweeps`);
      expect(((await r.json()) as { name: string }[])[0]!.name).toBe('late');
      await d.stop();
    }
  });
});
