import { execFile } from 'node:child_process';
import path from 'node:path';
import { expect, test } from 'vitest';
import { Mailbox, ringAllReduceSum } from '@ferry/core';
import { GrpcRing, PeerServer } from '@ferry/worker';
import { REPO_ROOT } from '../../../test/helpers/torch-ref.js';

test('ring all-reduce over the Peer gRPC service, ranks in one process', async () => {
  const servers = await Promise.all([0, 1, 2].map(async () => { const s = new PeerServer('127.0.0.1'); return { s, addr: await s.start() }; }));
  const rings = servers.map((x, r) => new GrpcRing(r, 3, 'g', servers[(r + 1) % 3]!.addr, x.s));
  const outs = await Promise.all(rings.map((t, r) => ringAllReduceSum(t, new Float32Array(300_000).fill(r + 1), 'op', 10_000)));
  for (const o of outs) expect(o[0]).toBe(6);
  await Promise.all(rings.map((t) => t.close()));
  await Promise.all(servers.map((x) => x.s.stop()));
});

test('ranks in separate threads finish every collective (closing never drops chunks still in flight)', async () => {
  // Each rank has its own event loop here; a rank that closes its stream as soon as its own part
  // is done used to drop the last chunks its neighbour still needed (a hang until the deadline).
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, [path.join(REPO_ROOT, 'bench/allreduce/run.mjs'), '--ranks', '3', '--mb', '4', '--repeat', '3'], { timeout: 90_000 }, (e, stdout, stderr) =>
      e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(stdout),
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
