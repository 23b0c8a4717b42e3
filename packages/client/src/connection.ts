import { FerryError, isErrorCode, type ErrorCode } from '@ferry/common';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { AdminClient, CoordinatorClient, EventsClient } from '@ferry/protocol';

/** How to reach a coordinator: address, optional TLS (CA; client cert/key for mutual TLS), token. */
export interface ConnectionOptions {
  readonly address: string;
  readonly token?: string;
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string; readonly serverName?: string };
}

export function credentials(o: ConnectionOptions): grpc.ChannelCredentials {
  if (!o.tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    o.tls.ca ? readFileSync(o.tls.ca) : null,
    o.tls.key ? readFileSync(o.tls.key) : null,
    o.tls.cert ? readFileSync(o.tls.cert) : null,
  );
}

export function channelOptions(o: ConnectionOptions): grpc.ChannelOptions {
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

export function eventsClient(o: ConnectionOptions): EventsClient {
  return new EventsClient(o.address, credentials(o), channelOptions(o));
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

/**
 * A unary call as a promise, with the token and a deadline; `signal` cancels it (the promise then
 * rejects with gRPC's CANCELLED).
 */
export function unary<Req, Res>(
  fn: Unary<Req, Res>,
  self: grpc.Client,
  req: Req,
  conn: ConnectionOptions,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const cancel = (): void => call.cancel();
    const call = fn.call(self, req, metadataFor(conn), { deadline: Date.now() + timeoutMs }, (e, r) => {
      signal?.removeEventListener('abort', cancel);
      if (e) reject(e);
      else resolve(r);
    });
    if (signal?.aborted) call.cancel();
    else signal?.addEventListener('abort', cancel, { once: true });
  });
}
