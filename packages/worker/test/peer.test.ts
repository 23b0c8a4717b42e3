import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHmac } from 'node:crypto';
import net from 'node:net';
import { expect, test } from 'vitest';
import { Mailbox, Rng, ringAllReduceSum } from '@ferry/core';
import { PeerRing, PeerServer, type PeerServerOptions } from '@ferry/worker';
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

/** What a raw client (an attacker, a confused process) sends: a hello and then frames. */
interface RawHello {
  readonly group: string;
  readonly fromRank: number;
  /** The secret it proves (HMAC of the challenge); `replay` sends this proof whatever the challenge. */
  readonly secret?: string;
  readonly replay?: string;
}

function frame(key: string, data: Buffer): Buffer {
  const k = Buffer.from(key);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(k.length, 0);
  head.writeUInt32BE(data.length, 4);
  return Buffer.concat([head, k, data]);
}

/**
 * A raw client of the ring link, speaking its wire format by hand (peer.ts): answers the
 * challenge, sends the frames, and returns the server's answers (status, reason) until it closes.
 */
function rawLink(addr: string, hello: RawHello, frames: Buffer[]): Promise<{ status: number; reason: string }[]> {
  const [host, port] = addr.split(':');
  return new Promise((resolve) => {
    const s = net.connect({ host: host!, port: Number(port) });
    let got = Buffer.alloc(0);
    let sent = false;
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const magic = 'ferry-ring/1\n'.length;
      if (!sent && got.length >= magic + 32) {
        sent = true;
        const challenge = got.subarray(magic, magic + 32);
        const proof =
          hello.replay ??
          createHmac('sha256', hello.secret ?? 'wrong')
            .update(challenge)
            .update(`|${hello.group}|${hello.fromRank}`)
            .digest('hex');
        const body = Buffer.from(JSON.stringify({ group: hello.group, fromRank: hello.fromRank, proof }));
        const len = Buffer.alloc(4);
        len.writeUInt32BE(body.length);
        s.write(Buffer.concat([len, body, ...frames]));
        got = got.subarray(magic + 32);
      }
    });
    const answers = (): { status: number; reason: string }[] => {
      const out: { status: number; reason: string }[] = [];
      for (let o = 0; sent && o + 5 <= got.length;) {
        const n = got.readUInt32BE(o + 1);
        if (o + 5 + n > got.length) break;
        out.push({ status: got.readUInt8(o), reason: got.subarray(o + 5, o + 5 + n).toString() });
        o += 5 + n;
      }
      return out;
    };
    // Done writing once answered (the server then reads to the end and closes), or after a while.
    const ender = setInterval(() => answers().length > 0 && s.end(), 20);
    const fallback = setTimeout(() => s.end(), 3_000);
    s.on('error', () => undefined);
    s.on('close', () => {
      clearInterval(ender);
      clearTimeout(fallback);
      resolve(answers());
    });
  });
}

/**
 * Random buffers, every element against a float64 sum: a chunk delivered at the wrong offset or to
 * the wrong rank changes values, which constant buffers would hide. float32 summation of k values
 * in any order is within (k - 1) unit roundoffs of the float64 sum of |x| (Higham, 4.2), so the
 * tolerance is (k - 1) * 2^-24 * sum |x_i| per element.
 */
test('ring all-reduce over the ring link: every element of random buffers equals the float64 sum, ranks in one process', async () => {
  const k = 3;
  const n = 300_001;
  const peers = await servers(k);
  const rings = peers.map((x, r) => new PeerRing(r, k, 'cell/1', peers[(r + 1) % k]!.addr, x.s, SECRET));
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

test('the ring link refuses connections without the group secret, replayed proofs, other groups, the wrong rank, partial floats and floods, and keeps serving', async () => {
  const [a, b] = await servers(2, { limits: { joinWaitMs: 300, maxGroupBytes: 4 << 20 } });
  const ringB = new PeerRing(1, 2, 'cell/1', a!.addr, b!.s, SECRET); // b accepts cell/1 from rank 0
  const good: RawHello = { group: 'cell/1', fromRank: 0, secret: SECRET };
  const small = [frame('k', Buffer.alloc(8))];
  // The proof of an earlier handshake (another challenge): what a recording of the wire holds.
  const recorded = createHmac('sha256', SECRET).update(Buffer.alloc(32)).update('|cell/1|0').digest('hex');
  const cases: [RawHello, Buffer[], string][] = [
    [{ group: 'cell/1', fromRank: 0 }, small, 'not a member of this group'],
    [{ ...good, secret: SECRET.replace('a', 'b') }, small, 'not a member of this group'],
    [{ ...good, replay: recorded }, small, 'not a member of this group'],
    [{ ...good, replay: 'abcd' }, small, 'not a member of this group'],
    [{ ...good, group: 'made-up/9' }, small, 'not a member of this group'],
    [{ ...good, fromRank: 1, secret: SECRET }, small, 'only rank 0'],
    [good, [frame('k', Buffer.alloc(3))], 'a chunk of 3 bytes is not whole float32 values'],
    [good, [frame('k', Buffer.alloc(8)).fill(0xff, 0, 4)], 'chunk key of 4294967295 bytes is over'],
    [
      good,
      Array.from({ length: 6 }, (_, i) => frame(`f${i}`, Buffer.alloc(1 << 20))),
      'more than 4194304 bytes waiting for group cell/1',
    ],
  ];
  // A good hello is accepted (status 0) and its chunk delivered.
  expect(await rawLink(b!.addr, good, small)).toEqual([{ status: 0, reason: '' }]);
  expect([...(await ringB.recv('k', 1_000))]).toEqual([0, 0]);
  for (const [hello, frames, why] of cases) {
    const answers = await rawLink(b!.addr, hello, frames);
    expect(answers.at(-1), why).toMatchObject({ status: 1 });
    expect(answers.at(-1)?.reason, why).toContain(why);
  }
  // The service still serves its members: a real ring between a and b completes.
  expect(b!.s.joinedGroups).toEqual(['cell/1']);
  await ringB.close();
  const rings = [
    new PeerRing(0, 2, 'cell/2', b!.addr, a!.s, SECRET),
    new PeerRing(1, 2, 'cell/2', a!.addr, b!.s, SECRET),
  ];
  const outs = await Promise.all(
    rings.map((t, r) => ringAllReduceSum(t, Float32Array.from([r + 1, 10 * (r + 1)]), 'ok', 5_000)),
  );
  expect([...outs[0]!]).toEqual([3, 30]);
  await Promise.all(rings.map((t) => t.close()));
  await Promise.all([a!.s.stop(), b!.s.stop()]);
});

test('the ring link binds off loopback only with TLS or an explicit insecure flag; over TLS the ring works', async () => {
  expect(() => new PeerServer({ host: '0.0.0.0' })).toThrow(/needs TLS .*or an explicit --insecure-peer/);
  expect(() => new PeerServer({ host: '127.evil.example' })).toThrow(/not loopback/);
  expect(() => new PeerServer({ host: '0.0.0.0', insecure: true })).not.toThrow();
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-peer-tls-'));
  const { key, cert } = selfSignedCert(dir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
  const tls = { cert: readFileSync(cert), key: readFileSync(key), ca: readFileSync(cert) };
  const peers = await servers(2, { tls });
  const rings = peers.map((x, r) => new PeerRing(r, 2, 'cell/1', peers[(r + 1) % 2]!.addr, x.s, SECRET, tls.ca));
  const outs = await Promise.all(rings.map((t, r) => ringAllReduceSum(t, Float32Array.from([r + 1]), 'tls', 5_000)));
  expect([...outs[1]!]).toEqual([3]);
  // A plain-text client gets nothing from a TLS ring link: no challenge, no answer.
  expect(await rawLink(peers[0]!.addr, { group: 'cell/1', fromRank: 1, secret: SECRET }, [])).toEqual([]);
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
