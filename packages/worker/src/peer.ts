import * as grpc from '@grpc/grpc-js';
import { isLoopbackHost, sameSecret } from '@ferry/common';
import { CollectiveError, InvalidArgumentError, Mailbox, type RingTransport } from '@ferry/core';
import { PeerClient, PeerService, type RingAck, type RingChunk } from '@ferry/protocol';

/** What the Peer service accepts before it refuses a stream. */
export interface PeerLimits {
  /** One chunk's bytes (the ring sends ~1 MiB chunks). */
  readonly maxChunkBytes: number;
  /** Bytes received for one group and not yet consumed (a ring keeps a few chunks in flight). */
  readonly maxGroupBytes: number;
  /** How long a stream for a group this worker has not joined yet waits for it (assignments race). */
  readonly joinWaitMs: number;
}

export const DEFAULT_PEER_LIMITS: PeerLimits = {
  maxChunkBytes: 16 << 20,
  maxGroupBytes: 256 << 20,
  joinWaitMs: 30_000,
};

/** TLS for the Peer link: this worker's certificate and key, and the CA its neighbours' certificates chain to. */
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
  /** Bind off loopback without TLS (the group secret still authenticates, in clear text). */
  readonly insecure?: boolean;
  readonly limits?: Partial<PeerLimits>;
}

interface Group {
  readonly secret: Buffer;
  /** The only rank allowed to send here: the left neighbour. */
  readonly left: number;
  readonly box: Mailbox;
}

const GROUP_HEADER = 'x-ferry-group';

function refuse(code: grpc.status, message: string): grpc.ServiceError {
  return Object.assign(new Error(message), { code, details: message, metadata: new grpc.Metadata() });
}

/**
 * The worker's Peer service: receives ring chunks from its left neighbour into a mailbox per
 * group (cell/generation). It accepts a stream only for a group this worker has joined, from a
 * sender presenting that group's secret (handed out by the coordinator with the assignment,
 * compared in constant time); chunks must come from the left neighbour's rank, hold whole float32
 * values, and stay under the size limits. Thin: the ring arithmetic is core's ringAllReduceSum.
 */
export class PeerServer {
  private readonly server: grpc.Server;
  private readonly groups = new Map<string, Group>();
  private readonly joinWaiters = new Map<string, (() => void)[]>();
  private readonly limits: PeerLimits;
  private port = 0;

  constructor(private readonly options: PeerServerOptions) {
    if (!isLoopbackHost(options.host) && !options.tls && !options.insecure) {
      throw new InvalidArgumentError(
        `the Peer service on ${options.host} (not loopback) needs TLS (--tls-cert and --tls-key, with --tls-ca for the neighbours), or an explicit --insecure-peer`,
      );
    }
    this.limits = { ...DEFAULT_PEER_LIMITS, ...options.limits };
    this.server = new grpc.Server({ 'grpc.max_receive_message_length': this.limits.maxChunkBytes + (64 << 10) });
    this.server.addService(PeerService, {
      ring: (call: grpc.ServerReadableStream<RingChunk, RingAck>, cb: grpc.sendUnaryData<RingAck>) =>
        this.ring(call, cb),
    });
  }

  private ring(call: grpc.ServerReadableStream<RingChunk, RingAck>, cb: grpc.sendUnaryData<RingAck>): void {
    call.pause();
    const name = String(call.metadata.get(GROUP_HEADER)[0] ?? '');
    const presented = Buffer.from(String(call.metadata.get('authorization')[0] ?? '').replace(/^Bearer /, ''));
    let closed = false;
    const close = (e: grpc.ServiceError | null, n = 0): void => {
      if (closed) return;
      closed = true;
      cb(e, e ? undefined : { chunks: n });
      if (e) call.destroy();
    };
    call.on('error', () => undefined);
    void this.waitForGroup(name).then((group) => {
      // One answer for an unknown group and a wrong secret: nothing tells a prober which it was.
      if (!group || !sameSecret(presented, group.secret)) {
        close(refuse(grpc.status.UNAUTHENTICATED, 'not a member of this group'));
        return;
      }
      let n = 0;
      call.on('data', (c: RingChunk) => {
        if (closed) return;
        const bytes = c.data;
        const why =
          c.group !== name
            ? `a chunk for group ${c.group} on a stream of ${name}`
            : c.fromRank !== group.left
              ? `a chunk from rank ${c.fromRank}; only rank ${group.left} sends here`
              : bytes.byteLength % 4 !== 0
                ? `a chunk of ${bytes.byteLength} bytes is not whole float32 values`
                : bytes.byteLength > this.limits.maxChunkBytes
                  ? `a chunk of ${bytes.byteLength} bytes is over the ${this.limits.maxChunkBytes}-byte limit`
                  : group.box.bufferedBytes + bytes.byteLength > this.limits.maxGroupBytes
                    ? `more than ${this.limits.maxGroupBytes} bytes waiting for group ${name}`
                    : undefined;
        if (why) {
          close(refuse(grpc.status.INVALID_ARGUMENT, why));
          return;
        }
        n++;
        group.box.put(
          c.key,
          new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)),
        );
      });
      call.on('end', () => close(null, n));
      call.resume();
    });
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

  /** Accepts chunks of `group` from rank `left` presenting `secret`; returns the group's mailbox. */
  join(group: string, secret: string, left: number): Mailbox {
    if (!secret)
      throw new CollectiveError(`group ${group} has no secret; the coordinator must hand one out with the assignment`);
    const g = { secret: Buffer.from(secret), left, box: new Mailbox() };
    this.groups.set(group, g);
    for (const wake of this.joinWaiters.get(group) ?? []) wake();
    this.joinWaiters.delete(group);
    return g.box;
  }

  /** Forgets a finished or aborted group (waiting receivers fail with `reason`); its streams are refused from now on. */
  drop(group: string, reason?: Error): void {
    this.groups.get(group)?.box.abort(reason ?? new CollectiveError(`group ${group} ended`));
    this.groups.delete(group);
  }

  /** Groups this worker is a member of now (tests, `ferry info`). */
  get joinedGroups(): string[] {
    return [...this.groups.keys()];
  }

  async start(): Promise<string> {
    const tls = this.options.tls;
    const creds = tls
      ? grpc.ServerCredentials.createSsl(tls.ca ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], false)
      : grpc.ServerCredentials.createInsecure();
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${this.options.host}:${this.options.port ?? 0}`, creds, (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    return `${this.options.advertiseHost ?? this.options.host}:${this.port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => this.server.tryShutdown(() => r()));
  }
}

/** A rank's ring transport over gRPC: one client stream to the right neighbour, its own mailbox. */
export class GrpcRing implements RingTransport {
  private readonly client: PeerClient;
  private readonly box: Mailbox;
  private stream: grpc.ClientWritableStream<RingChunk> | null = null;
  private finished: Promise<void> = Promise.resolve();
  private failed: Error | null = null;

  constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly group: string,
    rightAddress: string,
    private readonly server: PeerServer,
    private readonly secret: string,
    /** The CA the neighbours' Peer certificates chain to (TLS), or none (plain text). */
    tlsCa?: Buffer,
  ) {
    this.box = server.join(group, secret, (rank - 1 + worldSize) % worldSize);
    const creds = tlsCa ? grpc.credentials.createSsl(tlsCa) : grpc.credentials.createInsecure();
    this.client = new PeerClient(rightAddress, creds, { 'grpc.max_send_message_length': 16 << 20 });
  }

  private open(): grpc.ClientWritableStream<RingChunk> {
    if (!this.stream) {
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${this.secret}`);
      md.set(GROUP_HEADER, this.group);
      let done: () => void = () => undefined;
      this.finished = new Promise((r) => (done = r));
      this.stream = this.client.ring(md, (e) => {
        if (e)
          this.failed = new CollectiveError(`ring to rank ${(this.rank + 1) % this.worldSize} broke: ${e.message}`);
        done();
      });
      this.stream.on(
        'error',
        (e: Error) =>
          (this.failed = new CollectiveError(`ring to rank ${(this.rank + 1) % this.worldSize} broke: ${e.message}`)),
      );
    }
    return this.stream;
  }

  async send(key: string, data: Float32Array): Promise<void> {
    if (this.failed) throw this.failed;
    const s = this.open();
    const ok = s.write({
      group: this.group,
      fromRank: this.rank,
      key,
      data: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
    });
    if (!ok) await new Promise<void>((r) => s.once('drain', () => r()));
  }

  recv(key: string, deadlineMs: number): Promise<Float32Array> {
    if (this.failed) return Promise.reject(this.failed);
    return this.box.take(key, deadlineMs, `rank ${(this.rank - 1 + this.worldSize) % this.worldSize}`);
  }

  /** Ends the stream once everything written has been delivered (bounded wait), then closes. */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.stream) {
      this.stream.end();
      await Promise.race([this.finished, new Promise((r) => setTimeout(r, timeoutMs))]);
    }
    this.client.close();
    this.server.drop(this.group);
  }
}
