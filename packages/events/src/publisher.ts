import { randomUUID } from 'node:crypto';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
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

/** Publishes in flight at once (their acknowledgements are awaited together). */
const WINDOW = 256;
/** How long one publish waits for JetStream's acknowledgement before it is sent again. */
const ACK_TIMEOUT_MS = 2_000;
const RETRY_MS = 250;

interface Pending {
  readonly subject: string;
  readonly data: Uint8Array;
  /** JetStream's de-duplication id: a resend of an event already stored is not stored twice. */
  readonly id: string;
}

/**
 * Publishes FerryEvents as JSON on their subjects. Never blocks and never throws into the caller:
 * events wait in a bounded buffer, in order, until JetStream has acknowledged storing them, and
 * are sent again (same message id, so JetStream stores each once) while NATS is unreachable or
 * restarting. A plain NATS publish would be lost in the moment between a server dying and the
 * client noticing; an acknowledged one is not. Training never waits on NATS.
 */
export class EventPublisher {
  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  private connected = false;
  private closed = false;
  private pumping = false;
  /** Set by close() at its deadline: a pump still retrying gives up. */
  private abandon = false;
  private readonly buffer: Pending[] = [];
  private droppedCount = 0;
  private readonly limit: number;
  private readonly encoder = new TextEncoder();
  /** Message ids: this publisher's, then a sequence. */
  private readonly origin = randomUUID();
  private seq = 0;
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
      await ensureStream(nc).catch((e: Error) =>
        this.options.log?.(`cannot create the JetStream stream: ${e.message}`),
      );
      this.js = jetstream(nc);
      this.connected = true;
      this.markReady();
      void this.pump();
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') this.connected = false;
        if (s.type === 'reconnect') {
          this.connected = true;
          void this.pump();
        }
      }
    } catch (e) {
      this.options.log?.(`NATS: ${(e as Error).message}`);
    }
  }

  /** Whether NATS is connected (false while connecting or disconnected). */
  get isConnected(): boolean {
    return this.connected;
  }

  /** Events not yet acknowledged by JetStream. */
  get pending(): number {
    return this.buffer.length;
  }

  /** Events dropped because the buffer was full. */
  get dropped(): number {
    return this.droppedCount;
  }

  publish(subject: string, event: FerryEvent): void {
    if (this.closed) return;
    const data = this.encoder.encode(JSON.stringify(FerryEvent.toJSON(event)));
    this.buffer.push({ subject, data, id: `${this.origin}-${this.seq++}` });
    if (this.buffer.length > this.limit) {
      this.buffer.shift();
      this.droppedCount++;
    }
    void this.pump();
  }

  /**
   * Sends the buffer's head, a window at a time, until it is empty; one pump at a time (events
   * published while a window is in flight are taken by the loop's next turn).
   */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.js && this.buffer.length > 0) {
        const batch = this.buffer.slice(0, WINDOW);
        const js = this.js;
        const sent = await Promise.allSettled(
          batch.map((e) => js.publish(e.subject, e.data, { msgID: e.id, timeout: ACK_TIMEOUT_MS })),
        );
        // What was acknowledged leaves the buffer (unless the bound already dropped it).
        const acked = new Set(batch.filter((_, i) => sent[i]!.status === 'fulfilled'));
        for (let i = this.buffer.length - 1; i >= 0; i--) if (acked.has(this.buffer[i]!)) this.buffer.splice(i, 1);
        if (acked.size < batch.length) {
          if (this.abandon) return;
          await new Promise((r) => setTimeout(r, RETRY_MS));
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Waits (bounded) until what was published is acknowledged, then closes. */
  async close(timeoutMs = 2_000): Promise<void> {
    this.closed = true;
    const until = Date.now() + timeoutMs;
    const deadline = new Promise((r) => setTimeout(r, timeoutMs));
    await Promise.race([this.ready, deadline]);
    while (this.buffer.length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    this.abandon = true;
    const nc = this.nc;
    if (!nc) return;
    await Promise.race([nc.flush().catch(() => undefined), deadline]);
    await nc.close().catch(() => undefined);
  }
}
