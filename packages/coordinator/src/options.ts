import { FerryError, isLoopbackHost, splitHostPort } from '@ferry/common';
import { readFileSync } from 'node:fs';
import type { NatsTarget } from '@ferry/events';

/** Options of a coordinator; see resolveCoordinatorOptions for defaults and checks. */
export interface CoordinatorOptions {
  /** host:port to bind (default 127.0.0.1:7070; port 0 picks a free one). */
  readonly listen?: string;
  /** Folder for the SQLite state and the checkpoints. */
  readonly stateDir: string;
  readonly leaseMs?: number;
  readonly heartbeatIntervalMs?: number;
  readonly maxAttempts?: number;
  readonly tickMs?: number;
  /** How long a gang cell lets single cells backfill before holding idle workers (default 30 s). */
  readonly gangTimeoutMs?: number;
  /** Bearer token every call must carry (required off loopback unless insecure). */
  readonly token?: string;
  /** PEM files: server certificate and key; `ca` also requires client certificates (mutual TLS). */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca?: string };
  /** Allow a non-loopback bind without TLS and token. */
  readonly insecure?: boolean;
  /** Publish sweep, cell and worker events to NATS (JetStream stream FERRY). */
  readonly nats?: NatsTarget;
  /** Largest checkpoint an upload may bring (default 4 GiB). */
  readonly maxCheckpointBytes?: number;
  /** An upload stream silent for this long is cut and discarded (default 60 s). */
  readonly checkpointIdleMs?: number;
  /**
   * After a restart, how long workers have to reconnect and claim their running cells before those
   * are declared lost (default 20 s, at least the lease: a worker retries at least every 10 s).
   */
  readonly recoveryGraceMs?: number;
}

export interface ResolvedCoordinatorOptions {
  readonly listen: string;
  readonly stateDir: string;
  readonly leaseMs: number;
  readonly heartbeatIntervalMs: number;
  readonly maxAttempts: number;
  readonly tickMs: number;
  readonly gangTimeoutMs: number;
  readonly token: string | null;
  readonly tls: { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer | null } | null;
  readonly insecure: boolean;
  readonly nats: NatsTarget | null;
  readonly maxCheckpointBytes: number;
  readonly checkpointIdleMs: number;
  readonly recoveryGraceMs: number;
}

/** How often the coordinator checks leases and wakes pollers, unless set (not a CLI flag). */
export const DEFAULT_TICK_MS = 500;

/** A coordinator option that cannot be used (the message names it). */
export class CoordinatorConfigError extends FerryError {
  constructor(message: string) {
    super('FERRY_ERR_INVALID_ARGUMENT', message);
  }
}

export function resolveCoordinatorOptions(o: CoordinatorOptions): ResolvedCoordinatorOptions {
  const listen = o.listen ?? '127.0.0.1:7070';
  const { host } = splitHostPort(listen);
  const heartbeatIntervalMs = o.heartbeatIntervalMs ?? 2_000;
  const leaseMs = o.leaseMs ?? 30_000;
  if (leaseMs < 3 * heartbeatIntervalMs)
    throw new CoordinatorConfigError(
      `leaseMs (${leaseMs}) must be at least 3 x heartbeatIntervalMs (${heartbeatIntervalMs})`,
    );
  if (!isLoopbackHost(host) && !o.insecure && (!o.tls || !o.token)) {
    throw new CoordinatorConfigError(
      `binding ${listen} (not loopback) needs --tls-cert/--tls-key and --token, or an explicit --insecure`,
    );
  }
  return Object.freeze({
    listen,
    stateDir: o.stateDir,
    leaseMs,
    heartbeatIntervalMs,
    maxAttempts: o.maxAttempts ?? 3,
    tickMs: o.tickMs ?? DEFAULT_TICK_MS,
    gangTimeoutMs: o.gangTimeoutMs ?? 30_000,
    token: o.token ?? null,
    tls: o.tls
      ? { cert: readFileSync(o.tls.cert), key: readFileSync(o.tls.key), ca: o.tls.ca ? readFileSync(o.tls.ca) : null }
      : null,
    insecure: o.insecure ?? false,
    nats: o.nats ?? null,
    maxCheckpointBytes: o.maxCheckpointBytes ?? 4 * 2 ** 30,
    checkpointIdleMs: o.checkpointIdleMs ?? 60_000,
    recoveryGraceMs: o.recoveryGraceMs ?? 20_000,
  });
}
