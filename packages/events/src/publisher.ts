import type { NatsConnection } from '@nats-io/transport-node';
import { FerryEvent } from '@ferry/protocol';
import { connectNats, type NatsTarget } from './connection.js';
import { ensureStream } from './stream.js';

export interface PublisherOptions {
  readonly target: NatsTarget;
  /** Events kept while NATS is unreachable; the oldest are dropped beyond it. */
  readonly bufferLimit?: number;
  readonly log?: (line: string) => void;
}

/**
 * Publishes FerryEvents as JSON on their subjects. Never blocks and never throws into the caller:
 * while NATS is unreachable (or not yet connected) events wait in a bounded buffer and are flushed,
 * in order, on (re)connection. Training never waits on NATS.
 */
export class EventPublisher {
  private nc: NatsConnection | null = null;
  private connected = false;
  private closed = false;
  private readonly buffer: { subject: string; data: string }[] = [];
  private droppedCount = 0;
  private readonly limit: number;
  private readonly encoder = new TextEncoder();
  private markReady: () => void = () => undefined;
  /** Resolves once connected and the stream exists (never rejects). */
  private readonly ready = new Promise<void>((r) => (this.markReady = r));

  constructor(private readonly options: PublisherOptions) {
    this.limit = options.bufferLimit ?? 10_000;
    void this.start();
  }

  private async start(): Promise<void> {
    try {
      const nc = await connectNats(this.options.target);
      this.nc = nc;
      if (this.closed) {
        // Closed while still connecting: deliver what was buffered, then go.
        await ensureStream(nc).catch(() => undefined);
        this.connected = true;
        this.flush();
        await nc.flush().catch(() => undefined);
        await nc.close().catch(() => undefined);
        return;
      }
      await ensureStream(nc).catch((e: Error) =>
        this.options.log?.(`cannot create the JetStream stream: ${e.message}`),
      );
      this.connected = true;
      this.flush();
      this.markReady();
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') this.connected = false;
        if (s.type === 'reconnect') {
          this.connected = true;
          this.flush();
        }
      }
    } catch (e) {
      this.options.log?.(`NATS: ${(e as Error).message}`);
    }
  }

  /** Whether events currently go straight to NATS (false while connecting or disconnected). */
  get isConnected(): boolean {
    return this.connected;
  }

  get pending(): number {
    return this.buffer.length;
  }

  /** Events dropped because the buffer was full. */
  get dropped(): number {
    return this.droppedCount;
  }

  publish(subject: string, event: FerryEvent): void {
    if (this.closed) return;

    const data = JSON.stringify(FerryEvent.toJSON(event));
    if (this.connected && this.nc && this.buffer.length === 0) {
      try {
        this.nc.publish(subject, this.encoder.encode(data));
        return;
      } catch {
        this.connected = false;
      }
    }
    this.buffer.push({ subject, data });
    if (this.buffer.length > this.limit) {
      this.buffer.shift();
      this.droppedCount++;
    }
  }

  private flush(): void {
    while (this.connected && this.nc && this.buffer.length > 0) {
      const e = this.buffer[0]!;
      try {
        this.nc.publish(e.subject, this.encoder.encode(e.data));
        this.buffer.shift();
      } catch {
        this.connected = false;
      }
    }
  }

  /** Waits (bounded) for the connection, flushes what it can, and closes. */
  async close(timeoutMs = 2_000): Promise<void> {
    this.closed = true;
    const deadline = new Promise((r) => setTimeout(r, timeoutMs));
    await Promise.race([this.ready, deadline]);
    const nc = this.nc;
    if (!nc) return;
    this.flush();
    await Promise.race([nc.flush().catch(() => undefined), deadline]);
    await nc.close().catch(() => undefined);
  }
}
