import { DeliverPolicy, jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { FerryEvent, STREAM_NAME } from '@ferry/protocol';
import { connectNats, type NatsTarget } from './connection.js';
import { ensureStream } from './stream.js';

/**
 * Replays the FERRY stream from its first message, then follows it live (an ordered consumer:
 * it re-creates itself after a disconnect). A restarted reader therefore sees the whole history.
 */
export class EventSubscriber {
  private nc: NatsConnection | null = null;
  private stopped = false;

  constructor(
    private readonly target: NatsTarget,
    private readonly onEvent: (subject: string, event: FerryEvent) => void,
    private readonly log?: (line: string) => void,
  ) {}

  async start(): Promise<void> {
    const nc = await connectNats(this.target);
    this.nc = nc;
    await ensureStream(nc);
    const js = jetstream(nc);
    const consumer = await js.consumers.get(STREAM_NAME, { deliver_policy: DeliverPolicy.All });
    const messages = await consumer.consume();
    void (async () => {
      for await (const m of messages) {
        if (this.stopped) break;
        try {
          this.onEvent(m.subject, FerryEvent.fromJSON(JSON.parse(m.string())));
        } catch (e) {
          this.log?.(`skipping a malformed event on ${m.subject}: ${(e as Error).message}`);
        }
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.nc?.close().catch(() => undefined);
  }
}
