import { isLoopbackHost } from '@ferry/common';
import type { ConnectionOptions } from '@ferry/client';
import type { CliIo } from './io.js';
import { usageError, type ConnectionFlags } from './kit.js';
import { readTokenFile } from './token-file.js';

/** The connection flags (and FERRY_TOKEN / FERRY_COORDINATOR from the environment) as gRPC options. */
export function connectionFrom(f: ConnectionFlags, io: CliIo): ConnectionOptions {
  const address = f.coordinatorGiven ? f.coordinator : (io.env['FERRY_COORDINATOR'] ?? f.coordinator);
  if (f.token !== undefined && f.tokenFile !== undefined) throw usageError('--token and --token-file: give one');
  const token = f.tokenFile !== undefined ? readTokenFile(f.tokenFile) : (f.token ?? io.env['FERRY_TOKEN']);
  const { tlsCa: ca, tlsCert: cert, tlsKey: key, tlsServerName: serverName } = f;
  const tls =
    ca || cert || key
      ? {
          ...(ca ? { ca } : {}),
          ...(cert ? { cert } : {}),
          ...(key ? { key } : {}),
          ...(serverName ? { serverName } : {}),
        }
      : undefined;
  const host = /^(\[[^\]]+\]|[^:]+)(?::\d+)?$/.exec(address)?.[1] ?? address;
  if (token && !tls && !isLoopbackHost(host) && !f.insecureToken) {
    throw usageError(
      `--coordinator ${address} is not loopback: the token would cross the network in clear text; pass --tls-ca (the coordinator's CA), or --insecure-token on a network you trust`,
    );
  }
  return { address, ...(token ? { token } : {}), ...(tls ? { tls } : {}) };
}
