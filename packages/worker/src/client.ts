import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { AdminClient, CoordinatorClient } from '@ferry/protocol';

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

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r: Res) => void) => grpc.ClientUnaryCall;

/** A unary call as a promise, with the token and a deadline. */
export function unary<Req, Res>(fn: Unary<Req, Res>, self: grpc.Client, req: Req, conn: ConnectionOptions, timeoutMs: number): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn.call(self, req, metadataFor(conn), { deadline: Date.now() + timeoutMs }, (e, r) => (e ? reject(e) : resolve(r)));
  });
}
