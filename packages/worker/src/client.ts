import { FerryError, isErrorCode, type ErrorCode } from '@ferry/common';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { AdminClient, CoordinatorClient, EventsClient, type FerryEvent, type SweepStatus } from '@ferry/protocol';

/** How to reach a coordinator: address, optional TLS (CA; client cert/key for mutual TLS), token. */
export interface ConnectionOptions {
  readonly address: string;
  readonly token?: string;
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string; readonly serverName?: string };
}

function credentials(o: ConnectionOptions): grpc.ChannelCredentials {
  if (!o.tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    o.tls.ca ? readFileSync(o.tls.ca) : null,
    o.tls.key ? readFileSync(o.tls.key) : null,
    o.tls.cert ? readFileSync(o.tls.cert) : null,
  );
}

function channelOptions(o: ConnectionOptions): grpc.ChannelOptions {
  return {
    ...(o.tls?.serverName ? { 'grpc.ssl_target_name_override': o.tls.serverName } : {}),
    'grpc.max_receive_message_length': 8 << 20,
    'grpc.keepalive_time_ms': 10_000,
    // grpc-js backs a broken channel off up to 120 s, failing every call meanwhile; a coordinator
    // restarted after a long outage must be reachable again within its recovery grace (20 s).
    'grpc.initial_reconnect_backoff_ms': 250,
    'grpc.max_reconnect_backoff_ms': 5_000,
  };
}

export function metadataFor(o: ConnectionOptions): grpc.Metadata {
  const md = new grpc.Metadata();
  if (o.token) md.set('authorization', `Bearer ${o.token}`);
  return md;
}

export function coordinatorClient(o: ConnectionOptions): CoordinatorClient {
  return new CoordinatorClient(o.address, credentials(o), channelOptions(o));
}

export function adminClient(o: ConnectionOptions): AdminClient {
  return new AdminClient(o.address, credentials(o), channelOptions(o));
}

type Unary<Req, Res> = (
  req: Req,
  md: grpc.Metadata,
  opts: Partial<grpc.CallOptions>,
  cb: (e: grpc.ServiceError | null, r: Res) => void,
) => grpc.ClientUnaryCall;

/**
 * A gRPC failure as the FerryError a user can act on: the code the coordinator put in the details
 * (`[FERRY_ERR_...]`, from the registry), or, for a call that never reached it, FERRY_ERR_UNAVAILABLE
 * naming the address. Undefined for anything that is not a gRPC failure.
 */
export function ferryErrorFromGrpc(e: unknown, address: string): FerryError | undefined {
  const se = e as Partial<grpc.ServiceError>;
  if (typeof se.code !== 'number' || typeof se.details !== 'string') return undefined;
  const tagged = /\[(FERRY_ERR_[A-Z_]+)\]$/.exec(se.details)?.[1];
  const details = se.details.replace(/\s*\[FERRY_ERR_[A-Z_]+\]$/, '');
  if (tagged && isErrorCode(tagged))
    return new FerryError(tagged, `coordinator at ${address}: ${details}`, { cause: e });
  if (se.code === grpc.status.UNAVAILABLE || se.code === grpc.status.DEADLINE_EXCEEDED) {
    const why = se.code === grpc.status.DEADLINE_EXCEEDED ? 'did not answer in time' : 'cannot be reached';
    return new FerryError(
      'FERRY_ERR_UNAVAILABLE',
      `coordinator at ${address} ${why} (${details.split(/\.?\s*Resolution note:/)[0]}); is it running, and are the address and TLS flags right?`,
      { cause: e },
    );
  }
  // Untagged (a coordinator of another version, or grpc-js itself): the registry's code for the status.
  const byStatus: Partial<Record<number, ErrorCode>> = {
    [grpc.status.INVALID_ARGUMENT]: 'FERRY_ERR_INVALID_ARGUMENT',
    [grpc.status.NOT_FOUND]: 'FERRY_ERR_NOT_FOUND',
    [grpc.status.UNAUTHENTICATED]: 'FERRY_ERR_UNAUTHENTICATED',
  };
  return new FerryError(
    byStatus[se.code] ?? 'FERRY_ERR_INTERNAL',
    `coordinator at ${address}: ${details} (gRPC status ${se.code})`,
    { cause: e },
  );
}

/** A unary call as a promise, with the token and a deadline. */
export function unary<Req, Res>(
  fn: Unary<Req, Res>,
  self: grpc.Client,
  req: Req,
  conn: ConnectionOptions,
  timeoutMs: number,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn.call(self, req, metadataFor(conn), { deadline: Date.now() + timeoutMs }, (e, r) => (e ? reject(e) : resolve(r)));
  });
}

/**
 * A sweep with every cell, page by page (GetSweep answers at most about 4 MiB of cells at a time, so
 * a 10,000-cell sweep never exceeds what a client accepts). `withResults` adds each done cell's
 * result (per-image predictions: large); status views leave it out.
 */
export async function getSweepAll(
  admin: AdminClient,
  conn: ConnectionOptions,
  sweepId: string,
  opts: { withResults: boolean; timeoutMs?: number },
): Promise<SweepStatus> {
  const pages: SweepStatus[] = [];
  let offset = 0;
  do {
    const page = await unary(
      admin.getSweep,
      admin,
      { sweepId, offset, limit: 0, withResults: opts.withResults },
      conn,
      opts.timeoutMs ?? 10_000,
    );
    pages.push(page);
    offset = page.nextOffset;
  } while (offset > 0);
  return { ...pages.at(-1)!, cells: pages.flatMap((p) => p.cells), nextOffset: 0 };
}

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
  const client = new EventsClient(conn.address, credentials(conn), channelOptions(conn));
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
