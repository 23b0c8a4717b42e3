import { createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { isLoopbackHost, sameSecret, splitHostPort } from '@ferry/common';
import { CollectiveError, InvalidArgumentError, Mailbox, type RingTransport } from '@ferry/core';

/*
 * The ring link between data-parallel ranks: ferry's own framing over one TCP (or TLS) connection
 * from each rank to its right neighbour. Why not gRPC (which the rest of ferry speaks): a ring
 * all-reduce is a bulk stream of float32 bytes, and grpc-js put protobuf encoding, HTTP/2 framing
 * and flow-control windows (and a copy at each) between the socket and the gradients; measured on
 * loopback, the same ring ran at a third of a raw gRPC stream, with multi-second stalls in most
 * runs (bench/README.md). Here a chunk is written from the caller's array and read into its final
 * array: one copy in user space per direction, none for framing.
 *
 * The link's guarantees (those of the gRPC Peer service it replaced): it accepts a connection only for a group this
 * worker has joined, from the sender that proves the group's secret (handed out by the coordinator
 * with the assignment) and is the left neighbour; it refuses chunks that are not whole float32
 * values, too large, or past what the group may hold unconsumed; it binds off loopback only with
 * TLS or an explicit insecure flag. The secret never crosses the wire: the sender answers a fresh
 * random challenge with an HMAC of it, so a recorded handshake cannot be replayed.
 *
 * Wire format (all integers big-endian):
 *   server → client  MAGIC, 32-byte challenge
 *   client → server  u32 length, JSON hello {group, fromRank, proof: hex HMAC-SHA256(secret, challenge|group|fromRank)}
 *   server → client  u8 status (0 accepted, 1 refused), u32 length, UTF-8 reason
 *   client → server  frames: u32 key length, u32 payload bytes, key (UTF-8), payload (float32, little-endian)
 *   server → client  on a refused frame: u8 1, u32 length, reason; then the server closes
 * The client ends its side when the ring is done; the server reads to the end, then closes its
 * side, which is how the client knows that every chunk it wrote was read.
 */

/** What a ring link accepts before it refuses a connection. */
export interface PeerLimits {
  /** One chunk's bytes (the ring sends ~1 MiB chunks). */
  readonly maxChunkBytes: number;
  /** Bytes received for one group and not yet consumed (a ring keeps a few chunks in flight). */
  readonly maxGroupBytes: number;
  /** How long a connection for a group this worker has not joined yet waits for it (assignments race). */
  readonly joinWaitMs: number;
}

export const DEFAULT_PEER_LIMITS: PeerLimits = {
  maxChunkBytes: 16 << 20,
  maxGroupBytes: 256 << 20,
  joinWaitMs: 30_000,
};

/** TLS for the ring link: this worker's certificate and key, and the CA its neighbours' certificates chain to. */
export interface PeerTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca?: Buffer;
}

export interface PeerServerOptions {
  readonly host: string;
  readonly port?: number;
  /** Host other workers use to reach this one (default: the bind host). */
  readonly advertiseHost?: string;
  readonly tls?: PeerTls;
  /** Bind off loopback without TLS (the handshake still proves the group secret; chunks travel in clear). */
  readonly insecure?: boolean;
  readonly limits?: Partial<PeerLimits>;
}

const MAGIC = Buffer.from('ferry-ring/1\n');
const CHALLENGE_BYTES = 32;
const MAX_HELLO_BYTES = 4096;
const MAX_KEY_BYTES = 1024;
const MAX_REASON_BYTES = 4096;
const HANDSHAKE_MS = 10_000;

interface Group {
  readonly secret: Buffer;
  /** The only rank allowed to send here: the left neighbour. */
  readonly left: number;
  readonly box: Mailbox;
  /** Chunk arrays the ring is done with, by byte length, for the next chunks to be read into. */
  readonly spare: Map<number, Float32Array[]>;
}

/** Spare chunk arrays a group keeps (a ring step's worth: fresh memory page-faults at ~1 GB/s). */
const MAX_SPARE = 64;

function proofOf(secret: Buffer | string, challenge: Buffer, group: string, fromRank: number): Buffer {
  return createHmac('sha256', secret).update(challenge).update(`|${group}|${fromRank}`).digest();
}

function statusFrame(status: 0 | 1, reason = ''): Buffer {
  const text = Buffer.from(reason.slice(0, MAX_REASON_BYTES));
  const head = Buffer.alloc(5);
  head.writeUInt8(status, 0);
  head.writeUInt32BE(text.length, 1);
  return Buffer.concat([head, text]);
}

/**
 * Reads exactly-sized pieces from a socket's byte stream: `want(n, into?)` resolves with the next n
 * bytes, copied straight into `into` when given (a chunk's final array), else into a new Buffer.
 */
class ByteReader {
  private queue: Buffer[] = [];
  private queued = 0;
  private pending: { n: number; into: Uint8Array; have: number; done: (b: Uint8Array) => void } | null = null;
  private ended: Error | null = null;
  private fail: ((e: Error) => void) | null = null;
  private wake: (() => void) | null = null;

  constructor(socket: net.Socket) {
    socket.on('data', (d: Buffer) => this.push(d));
    socket.on('end', () => this.stop(new CollectiveError('the connection ended')));
    socket.on('close', () => this.stop(new CollectiveError('the connection closed')));
    socket.on('error', (e) => this.stop(new CollectiveError(e.message)));
  }

  want(n: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.pending) return Promise.reject(new Error('ByteReader: one read at a time'));
    const target = into ?? Buffer.allocUnsafe(n);
    return new Promise((resolve, reject) => {
      this.pending = { n, into: target, have: 0, done: resolve };
      this.fail = reject;
      this.drain();
    });
  }

  /** Whether the stream ended with nothing after the last whole read (else more bytes came). */
  atEnd(): Promise<boolean> {
    if (this.queued > 0) return Promise.resolve(false);
    if (this.ended) return Promise.resolve(true);
    return new Promise((resolve) => (this.wake = () => resolve(this.queued === 0)));
  }

  private push(d: Buffer): void {
    this.queue.push(d);
    this.queued += d.length;
    this.drain();
  }

  private drain(): void {
    if (this.wake && (this.queued > 0 || this.ended)) {
      const w = this.wake;
      this.wake = null;
      w();
    }
    const p = this.pending;
    if (!p) return;
    while (p.have < p.n && this.queue.length > 0) {
      const head = this.queue[0]!;
      const take = Math.min(head.length, p.n - p.have);
      p.into.set(head.subarray(0, take), p.have);
      p.have += take;
      this.queued -= take;
      if (take === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(take);
    }
    if (p.have === p.n) {
      this.pending = null;
      this.fail = null;
      p.done(p.into);
    } else if (this.ended) {
      this.pending = null;
      this.fail?.(this.ended);
    }
  }

  private stop(e: Error): void {
    if (this.ended) return;
    this.ended = e;
    this.drain();
  }
}

/**
 * A worker's end of the ring links: receives chunks from its left neighbour into a mailbox per
 * group (cell/generation). Thin: the ring arithmetic is core's ringAllReduceSum.
 */
export class PeerServer {
  private readonly server: net.Server;
  private readonly groups = new Map<string, Group>();
  private readonly joinWaiters = new Map<string, (() => void)[]>();
  private readonly sockets = new Set<net.Socket>();
  private readonly limits: PeerLimits;

  constructor(private readonly options: PeerServerOptions) {
    if (!isLoopbackHost(options.host) && !options.tls && !options.insecure) {
      throw new InvalidArgumentError(
        `the ring link on ${options.host} (not loopback) needs TLS (--tls-cert and --tls-key, with --tls-ca for the neighbours), or an explicit --insecure-peer`,
      );
    }
    this.limits = { ...DEFAULT_PEER_LIMITS, ...options.limits };
    const onSocket = (s: net.Socket): void => void this.serve(s);
    this.server = options.tls
      ? tls.createServer(
          { cert: options.tls.cert, key: options.tls.key, ...(options.tls.ca ? { ca: options.tls.ca } : {}) },
          onSocket,
        )
      : net.createServer(onSocket);
    // A client that is not TLS, or not ours, fails its handshake: nothing to do but drop it.
    this.server.on('tlsClientError', () => undefined);
  }

  private async serve(socket: net.Socket): Promise<void> {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.on('close', () => this.sockets.delete(socket));
    const reader = new ByteReader(socket);
    const refuse = (reason: string): void => {
      socket.end(statusFrame(1, reason));
      setTimeout(() => socket.destroy(), 1_000).unref();
    };
    const challenge = randomBytes(CHALLENGE_BYTES);
    socket.write(Buffer.concat([MAGIC, challenge]));
    let group: Group | undefined;
    let name = '';
    try {
      const hello = await withTimeout(this.readHello(reader), HANDSHAKE_MS, 'no hello within the handshake time');
      name = hello.group;
      group = await this.waitForGroup(name);
      // One answer for an unknown group and a wrong proof: nothing tells a prober which it was.
      if (!group || !sameSecret(hello.proof, proofOf(group.secret, challenge, name, hello.fromRank)))
        return refuse('not a member of this group');
      if (hello.fromRank !== group.left)
        return refuse(`rank ${hello.fromRank} may not send here; only rank ${group.left}`);
    } catch (e) {
      return refuse(`bad handshake: ${(e as Error).message}`);
    }
    socket.write(statusFrame(0));
    const head = Buffer.alloc(8);
    for (;;) {
      if (await reader.atEnd()) {
        socket.end();
        return;
      }
      try {
        await reader.want(8, head);
      } catch {
        return void socket.destroy();
      }
      const keyBytes = head.readUInt32BE(0);
      const bytes = head.readUInt32BE(4);
      const why =
        keyBytes > MAX_KEY_BYTES
          ? `a chunk key of ${keyBytes} bytes is over the ${MAX_KEY_BYTES}-byte limit`
          : bytes % 4 !== 0
            ? `a chunk of ${bytes} bytes is not whole float32 values`
            : bytes > this.limits.maxChunkBytes
              ? `a chunk of ${bytes} bytes is over the ${this.limits.maxChunkBytes}-byte limit`
              : group.box.bufferedBytes + bytes > this.limits.maxGroupBytes
                ? `more than ${this.limits.maxGroupBytes} bytes waiting for group ${name}`
                : undefined;
      if (why) return refuse(why);
      try {
        const key = Buffer.from(await reader.want(keyBytes)).toString('utf8');
        const values = group.spare.get(bytes)?.pop() ?? new Float32Array(bytes / 4);
        await reader.want(bytes, new Uint8Array(values.buffer));
        if (!this.groups.has(name)) return refuse(`group ${name} ended`);
        group.box.put(key, values);
      } catch {
        return void socket.destroy();
      }
    }
  }

  private async readHello(reader: ByteReader): Promise<{ group: string; fromRank: number; proof: Buffer }> {
    const n = Buffer.from(await reader.want(4)).readUInt32BE(0);
    if (n > MAX_HELLO_BYTES) throw new Error(`a hello of ${n} bytes`);
    const raw = JSON.parse(Buffer.from(await reader.want(n)).toString('utf8')) as Record<string, unknown>;
    const { group, fromRank, proof } = raw;
    if (typeof group !== 'string' || !Number.isInteger(fromRank) || typeof proof !== 'string')
      throw new Error('the hello needs group, fromRank and proof');
    return { group, fromRank: fromRank as number, proof: Buffer.from(proof, 'hex') };
  }

  /** The joined group, waiting up to joinWaitMs for this worker to join it; undefined if it does not. */
  private waitForGroup(name: string): Promise<Group | undefined> {
    const now = this.groups.get(name);
    if (now || !name) return Promise.resolve(now);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.joinWaiters.set(
          name,
          (this.joinWaiters.get(name) ?? []).filter((w) => w !== wake),
        );
        resolve(undefined);
      }, this.limits.joinWaitMs);
      const wake = (): void => {
        clearTimeout(timer);
        resolve(this.groups.get(name));
      };
      this.joinWaiters.set(name, [...(this.joinWaiters.get(name) ?? []), wake]);
    });
  }

  /** Accepts chunks of `group` from rank `left` proving `secret`; returns the group's mailbox. */
  join(group: string, secret: string, left: number): Mailbox {
    if (!secret)
      throw new CollectiveError(`group ${group} has no secret; the coordinator must hand one out with the assignment`);
    const g = { secret: Buffer.from(secret), left, box: new Mailbox(), spare: new Map<number, Float32Array[]>() };
    this.groups.set(group, g);
    for (const wake of this.joinWaiters.get(group) ?? []) wake();
    this.joinWaiters.delete(group);
    return g.box;
  }

  /** Takes back a chunk of `group` that its ring has consumed. */
  recycle(group: string, chunk: Float32Array): void {
    const g = this.groups.get(group);
    if (!g || chunk.byteOffset !== 0 || chunk.byteLength !== chunk.buffer.byteLength) return;
    let list = g.spare.get(chunk.byteLength);
    if (!list) g.spare.set(chunk.byteLength, (list = []));
    if (list.length < MAX_SPARE) list.push(chunk);
  }

  /** Forgets a finished or aborted group (waiting receivers fail with `reason`); its connections are refused from now on. */
  drop(group: string, reason?: Error): void {
    this.groups.get(group)?.box.abort(reason ?? new CollectiveError(`group ${group} ended`));
    this.groups.delete(group);
  }

  /** Groups this worker is a member of now (tests, `ferry info`). */
  get joinedGroups(): string[] {
    return [...this.groups.keys()];
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const port = (this.server.address() as net.AddressInfo).port;
    return `${this.options.advertiseHost ?? this.options.host}:${port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms))),
  ]);
}

/** A neighbour's `host:port` (as it registered it), or a coded error naming it. */
function peerAddress(address: string): { host: string; port: number } {
  try {
    return splitHostPort(address);
  } catch {
    throw new InvalidArgumentError(`peer address ${JSON.stringify(address)} is not host:port`);
  }
}

/**
 * A rank's ring transport: one connection to the right neighbour (opened on the first send), its
 * own mailbox for what the left neighbour sends. A send resolves once its bytes are handed to the
 * kernel, after which the caller may change its array.
 */
export class PeerRing implements RingTransport {
  private readonly box: Mailbox;
  private socket: net.Socket | null = null;
  private ready: Promise<void> | null = null;
  private closed: Promise<void> = Promise.resolve();
  private failed: Error | null = null;

  constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly group: string,
    private readonly rightAddress: string,
    private readonly server: PeerServer,
    private readonly secret: string,
    /** The CA the neighbours' certificates chain to (TLS), or none (plain TCP). */
    private readonly tlsCa?: Buffer,
  ) {
    this.box = server.join(group, secret, (rank - 1 + worldSize) % worldSize);
  }

  private get right(): string {
    return `rank ${(this.rank + 1) % this.worldSize}`;
  }

  private broke(why: string): CollectiveError {
    this.failed ??= new CollectiveError(`ring to ${this.right} (${this.rightAddress}) broke: ${why}`);
    return this.failed as CollectiveError;
  }

  private open(): Promise<void> {
    if (this.ready) return this.ready;
    const { host: bracketed, port } = peerAddress(this.rightAddress);
    const host = bracketed.replace(/^\[(.*)\]$/, '$1');
    // An IP address is checked against the certificate's IP names; only a host name is sent as SNI.
    const socket = this.tlsCa
      ? tls.connect({ host, port, ca: this.tlsCa, ...(net.isIP(host) ? {} : { servername: host }) })
      : net.connect({ host, port });
    this.socket = socket;
    socket.setNoDelay(true);
    const reader = new ByteReader(socket);
    let settle: () => void = () => undefined;
    this.closed = new Promise((r) => (settle = r));
    socket.on('close', () => settle());
    socket.on('error', (e) => this.broke(e.message));
    this.ready = (async () => {
      const greeting = Buffer.from(await reader.want(MAGIC.length + CHALLENGE_BYTES));
      if (!greeting.subarray(0, MAGIC.length).equals(MAGIC)) throw this.broke('the other end is not a ferry ring link');
      const challenge = greeting.subarray(MAGIC.length);
      const hello = Buffer.from(
        JSON.stringify({
          group: this.group,
          fromRank: this.rank,
          proof: proofOf(this.secret, challenge, this.group, this.rank).toString('hex'),
        }),
      );
      const len = Buffer.alloc(4);
      len.writeUInt32BE(hello.length);
      socket.write(Buffer.concat([len, hello]));
      await this.readStatus(reader);
      // After the handshake the server speaks only to refuse a chunk.
      void this.readStatus(reader).catch(() => undefined);
    })().catch((e: Error) => {
      throw e instanceof CollectiveError ? e : this.broke(e.message);
    });
    return this.ready;
  }

  private async readStatus(reader: ByteReader): Promise<void> {
    const head = Buffer.from(await reader.want(5));
    const n = head.readUInt32BE(1);
    if (n > MAX_REASON_BYTES) throw this.broke('an oversized answer');
    const reason = Buffer.from(await reader.want(n)).toString('utf8');
    if (head.readUInt8(0) !== 0) throw this.broke(`refused: ${reason}`);
  }

  async send(key: string, data: Float32Array): Promise<void> {
    if (this.failed) throw this.failed;
    await this.open();
    const socket = this.socket!;
    const k = Buffer.from(key);
    const head = Buffer.alloc(8 + k.length);
    head.writeUInt32BE(k.length, 0);
    head.writeUInt32BE(data.byteLength, 4);
    k.copy(head, 8);
    socket.cork();
    socket.write(head);
    const written = new Promise<void>((resolve, reject) =>
      socket.write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), (e) =>
        e ? reject(this.broke(e.message)) : resolve(),
      ),
    );
    socket.uncork();
    await written;
    if (this.failed) throw this.failed;
  }

  recv(key: string, deadlineMs: number): Promise<Float32Array> {
    if (this.failed) return Promise.reject(this.failed);
    return this.box.take(key, deadlineMs, `rank ${(this.rank - 1 + this.worldSize) % this.worldSize}`);
  }

  recycle(chunk: Float32Array): void {
    this.server.recycle(this.group, chunk);
  }

  /** Ends the connection once the neighbour has read everything written (bounded wait), then leaves the group. */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.socket) {
      await this.ready?.catch(() => undefined);
      this.socket.end();
      await Promise.race([this.closed, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
      this.socket.destroy();
    }
    this.server.drop(this.group);
  }
}
