import type * as grpc from '@grpc/grpc-js';
import type { FerryEvent } from '@ferry/protocol';
import { eventsClient, metadataFor, type ConnectionOptions } from './connection.js';

/**
 * Follows a coordinator's Events.Watch feed (history, then live) and calls `onEvent` for each
 * event; reconnects after a second when the stream ends or fails (a restarting coordinator sends
 * its history again, which a dashboard applies idempotently). Resolves once the first history is in.
 */
export function watchCoordinatorEvents(
  conn: ConnectionOptions,
  onEvent: (e: FerryEvent) => void,
  log?: (line: string) => void,
): { ready: Promise<void>; stop: () => void } {
  const client = eventsClient(conn);
  let stopped = false;
  let call: grpc.ClientReadableStream<FerryEvent> | null = null;
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (markReady = r));
  const open = (): void => {
    if (stopped) return;
    const c = client.watch({}, metadataFor(conn));
    call = c;
    // The history comes first, closed by a HistoryEnd marker; live events follow.
    c.on('data', (e: FerryEvent) => {
      if (e.historyEnd) markReady();
      else onEvent(e);
    });
    const again = (why: string): void => {
      if (stopped || call !== c) return;
      call = null;
      log?.(`coordinator event feed ${why}; reconnecting in 1 s`);
      setTimeout(open, 1_000);
    };
    c.on('error', (e: grpc.ServiceError) => again(`failed (${e.details || e.message})`));
    c.on('end', () => again('ended'));
  };
  open();
  return {
    ready,
    stop: () => {
      stopped = true;
      call?.cancel();
      client.close();
    },
  };
}
