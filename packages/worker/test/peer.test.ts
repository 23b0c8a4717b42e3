import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect, test } from 'vitest';
import { Mailbox, Rng, ringAllReduceSum } from '@ferry/core';
import { PeerClient } from '@ferry/protocol';
import { GrpcRing, PeerServer, type PeerServerOptions } from '@ferry/worker';
import { REPO_ROOT } from '../../../test/helpers/torch-ref.js';
import { selfSignedCert } from '../../../test/helpers/tls.js';

const SECRET = 'a-group-secret-handed-out-by-the-coordinator';

async function servers(
  k: number,
  options: Partial<PeerServerOptions> = {},
): Promise<{ s: PeerServer; addr: string }[]> {
  return Promise.all(
    Array.from({ length: k }, async () => {
      const s = new PeerServer({ host: '127.0.0.1', ...options });
      return { s, addr: await s.start() };
    }),
  );
}

/** A raw client stream to a Peer service, as an attacker or a confused process would open one. */
function rawStream(
  addr: string,
  metadata: Record<string, string>,
  chunks: { group: string; fromRank: number; key: string; data: Buffer }[],
): Promise<{ code: number; details: string } | null> {
  const client = new PeerClient(addr, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  return new Promise((resolve) => {
    const s = client.ring(md, (e) => {
      client.close();
      resolve(e ? { code: e.code, details: e.details } : null);
    });
    s.on('error', () => undefined);
    for (const c of chunks) s.write(c);
    s.end();
  });
}

/**
 * Random buffers, every element against a float64 sum: a chunk delivered at the wrong offset or to
 * the wrong rank changes values, which constant buffers would hide. float32 summation of k values
 * in any order is within (k - 1) unit roundoffs of the float64 sum of |x| (Higham, 4.2), so the
 * tolerance is (k - 1) * 2^-24 * sum |x_i| per element.
 */
test('ring all-reduce over the Peer gRPC service: every element of random buffers equals the float64 sum, ranks in one process', async () => {
  const k = 3;
  const n = 300_001;
  const peers = await servers(k);
  const rings = peers.map((x, r) => new GrpcRing(r, k, 'cell/1', peers[(r + 1) % k]!.addr, x.s, SECRET));
  const rng = Rng.fromSeed(42);
  const inputs = Array.from({ length: k }, () => Float32Array.from({ length: n }, () => rng.normal() * 10));
  const outs = await Promise.all(rings.map((t, r) => ringAllReduceSum(t, Float32Array.from(inputs[r]!), 'op', 10_000)));
  for (const out of outs) {
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const sum = inputs.reduce((a, x) => a + x[i]!, 0);
      const abs = inputs.reduce((a, x) => a + Math.abs(x[i]!), 0);
      worst = Math.max(worst, Math.abs(out[i]! - sum) / ((k - 1) * 2 ** -24 * abs + Number.MIN_VALUE));
    }
    expect(worst).toBeLessThanOrEqual(1);
  }
  expect(outs[1]).toEqual(outs[0]);
  await Promise.all(rings.map((t) => t.close()));
  await Promise.all(peers.map((x) => x.s.stop()));
});

test('the Peer service refuses streams without the group secret, for groups it is not in, from the wrong rank, of partial floats and floods, and keeps serving', async () => {
  const [a, b] = await servers(2, { limits: { joinWaitMs: 300, maxGroupBytes: 4 << 20 } });
  const ringB = new GrpcRing(1, 2, 'cell/1', a!.addr, b!.s, SECRET); // b accepts cell/1 from rank 0
  const chunk = (over: Partial<{ group: string; fromRank: number; key: string; data: Buffer }> = {}) => ({
    group: 'cell/1',
    fromRank: 0,
    key: 'k',
    data: Buffer.alloc(8),
    ...over,
  });
  const good = { authorization: `Bearer ${SECRET}`, 'x-ferry-group': 'cell/1' };
  const cases: [Record<string, string>, ReturnType<typeof chunk>[], number, string][] = [
    [{ 'x-ferry-group': 'cell/1' }, [chunk()], grpc.status.UNAUTHENTICATED, 'not a member of this group'],
    [
      { ...good, authorization: `Bearer ${SECRET.replace('a', 'b')}` },
      [chunk()],
      grpc.status.UNAUTHENTICATED,
      'not a member of this group',
    ],
    [{ ...good, authorization: 'Bearer short' }, [chunk()], grpc.status.UNAUTHENTICATED, 'not a member'],
    [
      { ...good, 'x-ferry-group': 'made-up/9' },
      [chunk({ group: 'made-up/9' })],
      grpc.status.UNAUTHENTICATED,
      'not a member of this group',
    ],
    [
      good,
      [chunk({ data: Buffer.alloc(3) })],
      grpc.status.INVALID_ARGUMENT,
      'a chunk of 3 bytes is not whole float32 values',
    ],
    [good, [chunk({ fromRank: 1 })], grpc.status.INVALID_ARGUMENT, 'only rank 0 sends here'],
    [
      good,
      [chunk({ group: 'other/1' })],
      grpc.status.INVALID_ARGUMENT,
      'a chunk for group other/1 on a stream of cell/1',
    ],
    [
      good,
      Array.from({ length: 6 }, (_, i) => chunk({ key: `f${i}`, data: Buffer.alloc(1 << 20) })),
      grpc.status.INVALID_ARGUMENT,
      'bytes waiting for group cell/1',
    ],
  ];
  for (const [md, chunks, code, why] of cases) {
    const r = await rawStream(b!.addr, md, chunks);
    expect(r?.code, why).toBe(code);
    expect(r?.details, why).toContain(why);
  }
  // Nothing a refused stream sent reached the group's mailbox but the flood's first 4 MiB, and the
  // service still serves its members: a real ring between a and b completes.
  expect(b!.s.joinedGroups).toEqual(['cell/1']);
  ringB.close().catch(() => undefined);
  await new Promise((r) => setTimeout(r, 50));
  const rings = [
    new GrpcRing(0, 2, 'cell/2', b!.addr, a!.s, SECRET),
    new GrpcRing(1, 2, 'cell/2', a!.addr, b!.s, SECRET),
  ];
  const outs = await Promise.all(
    rings.map((t, r) => ringAllReduceSum(t, Float32Array.from([r + 1, 10 * (r + 1)]), 'ok', 5_000)),
  );
  expect([...outs[0]!]).toEqual([3, 30]);
  await Promise.all(rings.map((t) => t.close()));
  await Promise.all([a!.s.stop(), b!.s.stop()]);
});

test('the Peer service binds off loopback only with TLS or an explicit insecure flag; over TLS the ring works', async () => {
  expect(() => new PeerServer({ host: '0.0.0.0' })).toThrow(/needs TLS .*or an explicit --insecure-peer/);
  expect(() => new PeerServer({ host: '127.evil.example' })).toThrow(/not loopback/);
  expect(() => new PeerServer({ host: '0.0.0.0', insecure: true })).not.toThrow();
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-peer-tls-'));
  const { key, cert } = selfSignedCert(dir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
  const tls = { cert: readFileSync(cert), key: readFileSync(key), ca: readFileSync(cert) };
  const peers = await servers(2, { tls });
  const rings = peers.map((x, r) => new GrpcRing(r, 2, 'cell/1', peers[(r + 1) % 2]!.addr, x.s, SECRET, tls.ca));
  const outs = await Promise.all(rings.map((t, r) => ringAllReduceSum(t, Float32Array.from([r + 1]), 'tls', 5_000)));
  expect([...outs[1]!]).toEqual([3]);
  // A plain-text client gets nothing from a TLS Peer service.
  expect(
    (await rawStream(peers[0]!.addr, { authorization: `Bearer ${SECRET}`, 'x-ferry-group': 'cell/1' }, []))?.code,
  ).toBe(grpc.status.UNAVAILABLE);
  await Promise.all(rings.map((t) => t.close()));
  await Promise.all(peers.map((x) => x.s.stop()));
});

test('ranks in separate threads finish every collective (closing never drops chunks still in flight)', async () => {
  // Each rank has its own event loop here; a rank that closes its stream as soon as its own part
  // is done used to drop the last chunks its neighbour still needed (a hang until the deadline).
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      [path.join(REPO_ROOT, 'bench/allreduce/run.mjs'), '--ranks', '3', '--mb', '4', '--repeat', '3'],
      { timeout: 90_000 },
      (e, stdout, stderr) => (e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  const line = JSON.parse(out.trim().split('\n').at(-1)!) as { ranks: number; ms: number };
  expect(line.ranks).toBe(3);
  expect(line.ms).toBeGreaterThan(0);
});

test('a mailbox delivers early and late chunks, and aborting fails waiting receivers', async () => {
  const box = new Mailbox();
  box.put('a', Float32Array.from([1]));
  expect([...(await box.take('a', 100, 'x'))]).toEqual([1]);
  const later = box.take('b', 1_000, 'x');
  box.put('b', Float32Array.from([2]));
  expect([...(await later)]).toEqual([2]);
  const waiting = box.take('c', 5_000, 'x');
  box.abort(new Error('group aborted'));
  await expect(waiting).rejects.toThrow('group aborted');
});
