import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';

/** Where NATS is and how to authenticate: `nats://[user:pass@|token@]host:port`, or explicit fields. */
export interface NatsTarget {
  readonly url: string;
  readonly user?: string;
  readonly pass?: string;
  readonly token?: string;
  /** Connection name shown by the server (`ferry-worker-gpu0`). */
  readonly name?: string;
}

/** Splits credentials out of a NATS URL; explicit fields win over the URL's. */
export function natsOptions(t: NatsTarget): ConnectionOptions {
  const u = new URL(t.url.includes('://') ? t.url : `nats://${t.url}`);
  const user = t.user ?? (u.username && u.password ? decodeURIComponent(u.username) : undefined);
  const pass = t.pass ?? (u.password ? decodeURIComponent(u.password) : undefined);
  const token = t.token ?? (u.username && !u.password ? decodeURIComponent(u.username) : undefined);
  return {
    servers: [`${u.hostname}:${u.port || '4222'}`],
    ...(user ? { user } : {}),
    ...(pass ? { pass } : {}),
    ...(token ? { token } : {}),
    ...(t.name ? { name: t.name } : {}),
  };
}

/** Connects, retrying forever in the background (reconnects too); resolves on the first connection. */
export function connectNats(t: NatsTarget): Promise<NatsConnection> {
  return connect({ ...natsOptions(t), maxReconnectAttempts: -1, waitOnFirstConnect: true, reconnectTimeWait: 500 });
}
