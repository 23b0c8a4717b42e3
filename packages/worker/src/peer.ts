import * as grpc from '@grpc/grpc-js';
import { CollectiveError, Mailbox, type RingTransport } from '@ferry/core';
import { PeerClient, PeerService, type RingAck, type RingChunk } from '@ferry/protocol';

/**
 * The worker's Peer service: receives ring chunks from its left neighbour into a mailbox per
 * group (cell/generation). Thin: the ring arithmetic is core's ringAllReduceSum.
 */
export class PeerServer {
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 16 << 20 });
  private readonly boxes = new Map<string, Mailbox>();
  private port = 0;

  constructor(
    private readonly host: string,
    private readonly token?: string,
    private readonly listenPort = 0,
    /** Host other workers use to reach this one (default: the bind host). */
    private readonly advertiseHost?: string,
  ) {
    this.server.addService(PeerService, {
      ring: (call: grpc.ServerReadableStream<RingChunk, RingAck>, cb: grpc.sendUnaryData<RingAck>) => {
        if (this.token && String(call.metadata.get('authorization')[0] ?? '') !== `Bearer ${this.token}`) {
          cb(Object.assign(new Error('missing or wrong bearer token'), { code: grpc.status.UNAUTHENTICATED }));
          return;
        }
        let n = 0;
        call.on('data', (c: RingChunk) => {
          n++;
          const bytes = c.data;
          const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
          this.box(c.group).put(c.key, floats);
        });
        call.on('end', () => cb(null, { chunks: n }));
        call.on('error', () => undefined);
      },
    });
  }

  box(group: string): Mailbox {
    let b = this.boxes.get(group);
    if (!b) {
      b = new Mailbox();
      this.boxes.set(group, b);
    }
    return b;
  }

  /** Forgets a finished or aborted group (waiting receivers fail with `reason`). */
  drop(group: string, reason?: Error): void {
    this.boxes.get(group)?.abort(reason ?? new CollectiveError(`group ${group} ended`));
    this.boxes.delete(group);
  }

  async start(): Promise<string> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${this.host}:${this.listenPort}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    return `${this.advertiseHost ?? this.host}:${this.port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => this.server.tryShutdown(() => r()));
  }
}

/** A rank's ring transport over gRPC: one client stream to the right neighbour, its own mailbox. */
export class GrpcRing implements RingTransport {
  private readonly client: PeerClient;
  private stream: grpc.ClientWritableStream<RingChunk> | null = null;
  private finished: Promise<void> = Promise.resolve();
  private failed: Error | null = null;

  constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly group: string,
    rightAddress: string,
    private readonly server: PeerServer,
    private readonly token?: string,
  ) {
    this.client = new PeerClient(rightAddress, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 16 << 20 });
  }

  private open(): grpc.ClientWritableStream<RingChunk> {
    if (!this.stream) {
      const md = new grpc.Metadata();
      if (this.token) md.set('authorization', `Bearer ${this.token}`);
      let done: () => void = () => undefined;
      this.finished = new Promise((r) => (done = r));
      this.stream = this.client.ring(md, (e) => {
        if (e) this.failed = new CollectiveError(`ring to rank ${(this.rank + 1) % this.worldSize} broke: ${e.message}`);
        done();
      });
      this.stream.on('error', (e: Error) => (this.failed = new CollectiveError(`ring to rank ${(this.rank + 1) % this.worldSize} broke: ${e.message}`)));
    }
    return this.stream;
  }

  async send(key: string, data: Float32Array): Promise<void> {
    if (this.failed) throw this.failed;
    const s = this.open();
    const ok = s.write({ group: this.group, fromRank: this.rank, key, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    if (!ok) await new Promise<void>((r) => s.once('drain', () => r()));
  }

  recv(key: string, deadlineMs: number): Promise<Float32Array> {
    if (this.failed) return Promise.reject(this.failed);
    return this.server.box(this.group).take(key, deadlineMs, `rank ${(this.rank - 1 + this.worldSize) % this.worldSize}`);
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
