import { mkdirSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { splitHostPort } from '@ferry/common';
import { AdminService, CoordinatorService, EventsService } from '@ferry/protocol';
import { adminService } from './admin-service.js';
import { Checkpoints } from './checkpoints.js';
import { EventFeed } from './feed.js';
import type { CoordinatorHost } from './host.js';
import { resolveCoordinatorOptions, type CoordinatorOptions, type ResolvedCoordinatorOptions } from './options.js';
import { bearerTokenInterceptor, guarded } from './rpc.js';
import { initialState, step } from './scheduler.js';
import type { CellEntry, SchedulerAction, SchedulerEvent, SchedulerState } from './scheduler-types.js';
import { Store } from './store.js';
import { WorkerService } from './worker-service.js';

export type CoordinatorLifecycle = 'created' | 'running' | 'stopping' | 'stopped';

/**
 * The coordinator: SQLite state and the scheduler's pure step function, behind three gRPC
 * services (worker-service.ts, admin-service.ts, the event feed) that share `apply`, the one way
 * state changes: step, persist what it decided, publish it, let the worker service act on it.
 * The bearer token is checked by a server interceptor before any handler runs.
 */
export class Coordinator implements CoordinatorHost {
  private lifecycle: CoordinatorLifecycle = 'created';
  private current: SchedulerState;
  private readonly server: grpc.Server;
  private tickTimer: NodeJS.Timeout | undefined;
  private boundPort = 0;
  readonly feed: EventFeed;
  readonly checkpoints: Checkpoints;
  private readonly workers: WorkerService;

  private constructor(
    readonly options: ResolvedCoordinatorOptions,
    readonly store: Store,
  ) {
    this.current = initialState(
      {
        leaseMs: options.leaseMs,
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        defaultMaxAttempts: options.maxAttempts,
        gangTimeoutMs: options.gangTimeoutMs,
      },
      store.cells(),
      store.workers(),
      { now: Date.now(), graceMs: options.recoveryGraceMs },
    );
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': 8 << 20,
      ...(options.token ? { interceptors: [bearerTokenInterceptor(options.token)] } : {}),
    });
    this.feed = new EventFeed(options.nats, store);
    this.checkpoints = new Checkpoints({
      stateDir: options.stateDir,
      maxCheckpointBytes: options.maxCheckpointBytes,
      checkpointIdleMs: options.checkpointIdleMs,
      cellByAttempt: (id) => this.cellByAttempt(id),
      isDone: (id) => this.current.cells.get(id)?.state === 'done',
      stored: (attemptId, epochsDone) => this.apply({ type: 'checkpoint', now: Date.now(), attemptId, epochsDone }),
    });
    this.workers = new WorkerService(this);
  }

  static async create(options: CoordinatorOptions): Promise<Coordinator> {
    const resolved = resolveCoordinatorOptions(options);
    mkdirSync(path.join(resolved.stateDir, 'checkpoints'), { recursive: true });
    return new Coordinator(resolved, new Store(path.join(resolved.stateDir, 'ferry.sqlite')));
  }

  get status(): CoordinatorLifecycle {
    return this.lifecycle;
  }

  get state(): SchedulerState {
    return this.current;
  }

  /** host:port actually bound. */
  get address(): string {
    return `${splitHostPort(this.options.listen).host}:${this.boundPort}`;
  }

  async run(): Promise<string> {
    if (this.lifecycle !== 'created') throw new Error(`coordinator is ${this.lifecycle}`);
    this.server.addService(CoordinatorService, guarded(this.workers.handlers()));
    this.server.addService(AdminService, guarded(adminService(this)));
    this.server.addService(EventsService, guarded(this.feed.service()));
    const tls = this.options.tls;
    const creds = tls
      ? grpc.ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], tls.ca !== null)
      : grpc.ServerCredentials.createInsecure();
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(this.options.listen, creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
    this.tickTimer = setInterval(() => this.apply({ type: 'tick', now: Date.now() }), this.options.tickMs);
    this.lifecycle = 'running';
    return this.address;
  }

  async shutdown(): Promise<void> {
    if (this.lifecycle === 'stopped' || this.lifecycle === 'stopping') return;
    this.lifecycle = 'stopping';
    clearInterval(this.tickTimer);
    this.workers.close();
    await this.feed.close();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    this.store.close();
    this.lifecycle = 'stopped';
  }

  /** Applies one scheduler event: persist everything it decided, then carry out the rest. */
  apply(event: SchedulerEvent): readonly SchedulerAction[] {
    const r = step(this.current, event);
    this.store.transaction(() => {
      for (const a of r.actions) {
        if (a.type === 'saveCell') this.store.saveCell(a.cell);
        else if (a.type === 'saveWorker') this.store.saveWorker(a.worker);
        else if (a.type === 'attemptStarted') this.store.attemptStarted(a.attemptId, a.cellId, a.workerId, a.at);
        else if (a.type === 'attemptEnded') this.store.attemptEnded(a.attemptId, a.outcome, a.error, a.at);
      }
    });
    this.current = r.state;
    this.feed.publish(r.actions, r.state);
    this.workers.applied(event, r.actions);
    return r.actions;
  }

  cellByAttempt(attemptId: string): CellEntry | undefined {
    const id = this.current.byAttempt.get(attemptId);
    const c = id === undefined ? undefined : this.current.cells.get(id);
    return c?.state === 'running' && c.attemptId === attemptId ? c : undefined;
  }

  workerName(workerId: string | null): string {
    return workerId ? (this.current.workers.get(workerId)?.name ?? workerId) : '';
  }
}
