import os from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import { FERRY_VERSION, FerryError } from '@ferry/common';
import type { Assignment, CoordinatorClient, RunningCell } from '@ferry/protocol';
import {
  DEFAULT_BACKOFF,
  coordinatorClient,
  ferryErrorFromGrpc,
  isUnavailable,
  unary,
  withBackoff,
  type BackoffPolicy,
  type ConnectionOptions,
} from '@ferry/client';
import { HeartbeatThread, type HeartbeatReply } from './heartbeat.js';

/** Who this worker is to the coordinator, and how it keeps in touch. */
export interface SessionOptions {
  readonly connection: ConnectionOptions;
  readonly workerId: string;
  readonly name: string;
  readonly backend: string;
  readonly device: string;
  readonly gpuIndex?: number;
  readonly slurmJob?: string;
  /** Where the heartbeat thread writes its liveness file (`ferry health`). */
  readonly heartbeatFile: string;
  readonly backoff: BackoffPolicy;
  /** Stop registering (FERRY_ERR_UNAVAILABLE) after this long without an answer; default never. */
  readonly giveUpAfterMs?: number;
  /** How long one poll waits for work. */
  readonly pollWaitMs?: number;
}

/** What the session needs of the worker it serves. */
export interface SessionHooks {
  /** The attempts the worker holds (or claims after a restart), for registration and heartbeats. */
  running(): RunningCell[];
  imagesPerSec(): number;
  /** The coordinator let these attempts go (moved on at registration, or cancelled). */
  drop(attemptIds: readonly string[], why: 'moved on' | 'cancelled'): void;
  /** A registration went through (the first, or after the session dropped). */
  registered(): void;
  /** Each heartbeat interval on the main thread (the worker's own event). */
  tick(): void;
  stopping(): boolean;
  log(line: string): void;
}

/**
 * The worker's session with the coordinator: registration (one at a time, with backoff, giving up
 * after giveUpAfterMs), heartbeats (a thread of their own keeps the lease while a step holds the
 * main thread), and the long poll for work. A session can drop and come back at any time; the
 * worker only asks for the next assignment.
 */
export class CoordinatorSession {
  readonly client: CoordinatorClient;
  private session: { id: string; heartbeatMs: number } | null = null;
  private registering: Promise<void> | null = null;
  private timer: NodeJS.Timeout | undefined;
  private heartbeats: HeartbeatThread | null = null;
  private polling: AbortController | null = null;
  private peerAddress = '';
  private closed = false;
  /** A registration that gave up (giveUpAfterMs) while nobody awaited it: next() throws it. */
  private gaveUp: unknown = null;

  constructor(
    private readonly o: SessionOptions,
    private readonly hooks: SessionHooks,
  ) {
    this.client = coordinatorClient(o.connection);
  }

  get connection(): ConnectionOptions {
    return this.o.connection;
  }

  /** Starts the heartbeat thread; `peerAddress` is the worker's ring link, sent at registration. */
  start(peerAddress: string): void {
    this.peerAddress = peerAddress;
    this.heartbeats = new HeartbeatThread(
      { connection: this.o.connection, workerId: this.o.workerId, heartbeatFile: this.o.heartbeatFile },
      (r) => this.heard(r),
    );
  }

  /**
   * The coordinator's answer to one long poll (`hasAssignment` false: nothing to run now), or null
   * when there was none: no session (shutting down), the poll was interrupted, or it failed (logged
   * with its code; the session registers again).
   */
  async next(): Promise<Assignment | null> {
    if (this.gaveUp) throw this.gaveUp;
    await this.ensure();
    const s = this.session;
    if (!s || this.hooks.stopping()) return null;
    const waitMs = this.o.pollWaitMs ?? 10_000;
    this.polling = new AbortController();
    try {
      const req = { workerId: this.o.workerId, sessionId: s.id, waitMs };
      const a = await unary(this.client.poll, this.client, req, this.o.connection, waitMs + 5_000, this.polling.signal);
      return a;
    } catch (e) {
      if (!this.polling.signal.aborted && !this.hooks.stopping()) {
        const err = ferryErrorFromGrpc(e, this.o.connection.address);
        this.hooks.log(
          `poll failed (${err?.code ?? 'FERRY_ERR_UNAVAILABLE'}: ${err?.message ?? String(e)}); registering again`,
        );
      }
      if (this.session === s) this.session = null;
      return null;
    } finally {
      this.polling = null;
    }
  }

  /** Ends a poll in flight (shutdown, or the session dropped): next() returns null at once. */
  interrupt(): void {
    this.polling?.abort();
  }

  /** The worker's state for the heartbeat thread (call when it changes). */
  pushState(): void {
    this.heartbeats?.update({
      sessionId: this.session?.id ?? null,
      intervalMs: this.session?.heartbeatMs ?? 1_000,
      running: this.hooks.running(),
      imagesPerSec: this.hooks.imagesPerSec(),
    });
  }

  /**
   * Retries a call while the coordinator is unreachable (it may be restarting), for up to two
   * minutes: a finished cell's result must not be lost to a coordinator that is down for a while.
   */
  retrying<T>(fn: () => Promise<T>): Promise<T> {
    const until = Date.now() + 120_000;
    return withBackoff(fn, {
      policy: this.o.backoff,
      retry: (e) => isUnavailable(e) && Date.now() < until && !this.hooks.stopping(),
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.heartbeats?.stop();
    this.client.close();
  }

  /** One registration at a time, whoever notices the session is gone (poll loop or heartbeat). */
  private ensure(): Promise<void> {
    if (this.session) return Promise.resolve();
    this.registering ??= this.register().finally(() => (this.registering = null));
    return this.registering;
  }

  private async register(): Promise<void> {
    const since = Date.now();
    const { giveUpAfterMs: giveUp, connection: conn } = this.o;
    const request = () => ({
      workerId: this.o.workerId,
      name: this.o.name,
      capabilities: {
        backend: this.o.backend,
        device: this.o.device,
        memoryBytes: os.totalmem(),
        ferryVersion: FERRY_VERSION,
        host: os.hostname(),
        gpuIndex: this.o.gpuIndex ?? -1,
        peerAddress: this.peerAddress,
        slurmJob: this.o.slurmJob ?? '',
      },
      running: this.hooks.running(),
    });
    const why = (e: unknown): string => (e as grpc.ServiceError).details ?? (e as Error).message;
    const r = await withBackoff(() => unary(this.client.register, this.client, request(), conn, 10_000), {
      policy: this.o.backoff,
      retry: () => !this.hooks.stopping() && (giveUp === undefined || Date.now() - since < giveUp),
      onRetry: (e, delay) =>
        this.hooks.log(`cannot reach the coordinator at ${conn.address} (${why(e)}); retrying in ${delay} ms`),
    }).catch((e: unknown) => {
      if (this.hooks.stopping()) return null;
      if (giveUp !== undefined && Date.now() - since >= giveUp)
        throw new FerryError(
          'FERRY_ERR_UNAVAILABLE',
          `the coordinator at ${conn.address} has not answered for ${Math.round((Date.now() - since) / 1000)} s (--give-up-after-ms ${giveUp}): stopping (${why(e)})`,
        );
      throw e;
    });
    // Stopped meanwhile: no session, and no heartbeat timer to keep the process alive.
    if (!r || this.closed || this.hooks.stopping()) return;
    this.session = { id: r.sessionId, heartbeatMs: r.heartbeatIntervalMs };
    if (r.abandonAttempts.length > 0) this.hooks.drop(r.abandonAttempts, 'moved on');
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      this.hooks.tick();
      this.pushState();
    }, r.heartbeatIntervalMs);
    this.pushState();
    this.hooks.registered();
    this.hooks.log(`registered with ${conn.address} (backend ${this.o.backend})`);
  }

  /** The coordinator's answer to a heartbeat of the current session: stop attempts, register again. */
  private heard(r: HeartbeatReply): void {
    if (r.sessionId !== this.session?.id) return;
    if (r.type === 'reply') {
      if (r.cancelAttempts.length > 0) this.hooks.drop(r.cancelAttempts, 'cancelled');
      if (r.reregister) this.session = null;
    } else {
      // The coordinator may be restarting: register again (with backoff) right away, even while
      // training, so that a restarted coordinator sees this worker claim its cell within a lease.
      this.session = null;
    }
    if (!this.session) {
      this.pushState();
      this.interrupt();
      // A registration that gives up (giveUpAfterMs) surfaces in the poll loop: next() throws it.
      this.ensure().catch((e: unknown) => {
        this.gaveUp = e;
        this.interrupt();
      });
    }
  }
}

export const backoffOf = (o: { reconnectMinMs?: number; reconnectMaxMs?: number }): BackoffPolicy => ({
  minMs: o.reconnectMinMs ?? DEFAULT_BACKOFF.minMs,
  maxMs: o.reconnectMaxMs ?? DEFAULT_BACKOFF.maxMs,
});
