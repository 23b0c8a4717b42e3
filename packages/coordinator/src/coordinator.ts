import {
  CHECKPOINT_FORMAT,
  FerryError,
  grpcStatusOf,
  isErrorCode,
  isFerryError,
  isLoopbackHost,
  retryOf,
} from '@ferry/common';
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  AdminService,
  Assignment,
  CoordinatorService,
  type Ack,
  CellStatus,
  CellResult,
  EpochMetrics,
  type CheckpointChunk,
  type SweepStatus,
  type CheckpointRequest,
  type CompleteRequest,
  type CountResponse,
  type EpochReport,
  type FailRequest,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type ListSweepsRequest,
  type ListSweepsResponse,
  type ListWorkersRequest,
  type ListWorkersResponse,
  type PollRequest,
  type RegisterRequest,
  type RegisterResponse,
  type ReleaseRequest,
  type StartRequest,
  type StartResponse,
  type SubmitSweepRequest,
  type SubmitSweepResponse,
  type SweepRef,
} from '@ferry/protocol';
import { EventPublisher, type NatsTarget } from '@ferry/events';
import { EventsService, FerryEvent, SUBJECTS, type WatchRequest } from '@ferry/protocol';
import { cellEvent, epochEvent, storeEvents } from './events.js';
import { toProtoSpec } from './spec.js';
import { checkpointProblem } from './checkpoint-file.js';
import { splitHostPort } from './net.js';
import {
  initialState,
  step,
  type CellEntry,
  type SchedulerAction,
  type SchedulerEvent,
  type SchedulerState,
} from './scheduler.js';
import { Store } from './store.js';
import { parseSweep } from './sweep.js';

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
    tickMs: o.tickMs ?? 500,
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

export type CoordinatorLifecycle = 'created' | 'running' | 'stopping' | 'stopped';

const CHUNK_BYTES = 1 << 20;
/** About this many encoded bytes of cells per GetSweep answer (clients accept 8 MiB). */
const PAGE_BYTES = 4 << 20;
/** Unsent events an Events.Watch subscriber may fall behind by before it is cut. */
const WATCH_BUFFER_EVENTS = 100_000;

type Handler<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

function status(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/**
 * The coordinator: SQLite state, the scheduler's step function, and thin gRPC adapters for the
 * worker-facing `Coordinator` service and the CLI-facing `Admin` service.
 */
export class Coordinator {
  private peerKeyCache: Buffer | undefined;
  private lifecycle: CoordinatorLifecycle = 'created';
  private state: SchedulerState;
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 8 << 20 });
  private tickTimer: NodeJS.Timeout | undefined;
  private readonly stops = new Map<string, Set<string>>();
  private readonly reregister = new Set<string>();
  private readonly pollers = new Map<
    string,
    { sessionId: string; done: (a: Assignment) => void; timer: NodeJS.Timeout }
  >();
  private boundPort = 0;
  private readonly events: EventPublisher | null;
  /** Events.Watch subscribers (dashboards without NATS). */
  private readonly watchers = new Set<grpc.ServerWritableStream<WatchRequest, FerryEvent>>();

  private constructor(
    readonly options: ResolvedCoordinatorOptions,
    private readonly store: Store,
  ) {
    this.state = initialState(
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
    this.events = options.nats
      ? new EventPublisher({ target: { ...options.nats, name: options.nats.name ?? 'ferry-coordinator' } })
      : null;
  }

  static async create(options: CoordinatorOptions): Promise<Coordinator> {
    const resolved = resolveCoordinatorOptions(options);
    mkdirSync(path.join(resolved.stateDir, 'checkpoints'), { recursive: true });
    return new Coordinator(resolved, new Store(path.join(resolved.stateDir, 'ferry.sqlite')));
  }

  get status(): CoordinatorLifecycle {
    return this.lifecycle;
  }

  /** host:port actually bound. */
  get address(): string {
    return `${splitHostPort(this.options.listen).host}:${this.boundPort}`;
  }

  async run(): Promise<string> {
    if (this.lifecycle !== 'created') throw new Error(`coordinator is ${this.lifecycle}`);
    this.server.addService(CoordinatorService, this.wrap(this.workerHandlers()));
    this.server.addService(AdminService, this.wrap(this.adminHandlers()));
    this.server.addService(EventsService, this.wrap(this.eventHandlers()));
    const creds = this.options.tls
      ? grpc.ServerCredentials.createSsl(
          this.options.tls.ca,
          [{ private_key: this.options.tls.key, cert_chain: this.options.tls.cert }],
          this.options.tls.ca !== null,
        )
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
    for (const p of this.pollers.values()) {
      clearTimeout(p.timer);
      p.done(Assignment.fromPartial({ hasAssignment: false }));
    }
    this.pollers.clear();
    for (const w of this.watchers) w.end();
    this.watchers.clear();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    await this.events?.close();
    this.store.close();
    this.lifecycle = 'stopped';
  }

  /** Applies one scheduler event: persist everything it decided, then carry out the rest. */
  private apply(event: SchedulerEvent): readonly SchedulerAction[] {
    const r = step(this.state, event);
    this.store.transaction(() => {
      for (const a of r.actions) {
        if (a.type === 'saveCell') this.store.saveCell(a.cell);
        else if (a.type === 'saveWorker') this.store.saveWorker(a.worker);
        else if (a.type === 'attemptStarted') this.store.attemptStarted(a.attemptId, a.cellId, a.workerId, a.at);
        else if (a.type === 'attemptEnded') this.store.attemptEnded(a.attemptId, a.outcome, a.error, a.at);
      }
    });
    this.state = r.state;
    if (this.publishing) this.publish(r.actions);
    for (const a of r.actions) {
      if (a.type === 'stopAttempt')
        this.stops.set(a.workerId, new Set([...(this.stops.get(a.workerId) ?? []), a.attemptId]));
      if (a.type === 'reregister') this.reregister.add(a.workerId);
    }
    if (event.type !== 'poll' && r.actions.some((a) => a.type === 'saveCell')) this.wakePollers();
    return r.actions;
  }

  /** Cell and worker state changes as events, on every sweep the cell belongs to. */
  /** An event to NATS (when configured) and to every Events.Watch subscriber. */
  private emitEvent(subject: string, event: FerryEvent): void {
    this.events?.publish(subject, event);
    this.sendToWatchers(event);
  }

  /** An event to the Events.Watch subscribers only. */
  private sendToWatchers(event: FerryEvent): void {
    for (const w of this.watchers) {
      // A watcher that does not read (a stalled dashboard) is cut rather than buffered without
      // bound; it reconnects and gets a fresh snapshot.
      if (w.writableLength > WATCH_BUFFER_EVENTS) {
        this.watchers.delete(w);
        w.emit(
          'error',
          status(grpc.status.RESOURCE_EXHAUSTED, 'event watcher too slow; reconnect for a fresh snapshot'),
        );
      } else w.write(event);
    }
  }

  private get publishing(): boolean {
    return this.events !== null || this.watchers.size > 0;
  }

  private publish(actions: readonly SchedulerAction[]): void {
    const time = new Date().toISOString();
    for (const a of actions) {
      if (a.type === 'saveCell') {
        const c = a.cell;
        const cell = cellEvent(
          c,
          c.state === 'done' ? this.store.result(c.id) : undefined,
          c.workerId ? (this.state.workers.get(c.workerId)?.name ?? c.workerId) : '',
        );
        for (const sweepId of c.sweepIds)
          this.emitEvent(SUBJECTS.cell(sweepId, c.id), FerryEvent.fromPartial({ sweepId, time, cell }));
      } else if (a.type === 'saveWorker') {
        const w = a.worker;
        const cellId = this.state.byWorker.get(w.id);
        const sweepId = cellId ? (this.state.cells.get(cellId)?.sweepIds[0] ?? SUBJECTS.CLUSTER) : SUBJECTS.CLUSTER;
        this.emitEvent(
          SUBJECTS.worker(sweepId, w.id),
          FerryEvent.fromPartial({
            sweepId,
            time,
            worker: {
              workerId: w.id,
              name: w.name,
              backend: w.backend,
              device: w.device,
              state: w.state,
              cellId: cellId ?? '',
            },
          }),
        );
      }
    }
  }

  /** Offers work to every waiting long-poll (after anything that may have freed or added cells). */
  private wakePollers(): void {
    for (const [workerId, p] of [...this.pollers]) {
      const a = this.tryAssign(workerId, p.sessionId);
      if (a) {
        this.pollers.delete(workerId);
        clearTimeout(p.timer);
        p.done(a);
      }
    }
  }

  private tryAssign(workerId: string, sessionId: string): Assignment | undefined {
    const actions = this.apply({ type: 'poll', now: Date.now(), workerId, sessionId, newAttemptId: randomUUID() });
    // Gang members waiting in their own long polls get their assignment when woken.
    if (actions.some((a) => a.type === 'assign' && a.workerId !== workerId)) setImmediate(() => this.wakePollers());
    const assign = actions.find((a) => a.type === 'assign' && a.workerId === workerId);
    if (!assign || assign.type !== 'assign') return undefined;
    const cell = this.state.cells.get(assign.cellId)!;
    return {
      hasAssignment: true,
      sweepId: cell.sweepIds[0] ?? '',
      cellId: cell.id,
      attemptId: assign.attemptId,
      spec: toProtoSpec(cell.spec),
      checkpointEpochs: this.checkpointFile(cell.id) ? cell.checkpointEpochs : 0,
      leaseMs: this.options.leaseMs,
      rank: assign.rank,
      worldSize: assign.members.length,
      members: [...assign.members],
      generation: assign.generation,
      peerAddresses: assign.members.map((m) => this.state.workers.get(m)?.peerAddress ?? ''),
      groupSecret: assign.members.length > 1 ? this.groupSecret(`${cell.id}/${assign.generation}`) : '',
    };
  }

  /**
   * A data-parallel group's secret: HMAC-SHA256 of its name under a key kept in the state folder
   * (created once), so every member of a generation gets the same secret, across coordinator
   * restarts too, and no group can derive another's.
   */
  private groupSecret(group: string): string {
    return createHmac('sha256', this.peerKey).update(group).digest('hex');
  }

  private get peerKey(): Buffer {
    if (!this.peerKeyCache) {
      const file = path.join(this.options.stateDir, 'peer.key');
      if (!existsSync(file)) writeFileSync(file, randomBytes(32), { mode: 0o600, flag: 'wx' });
      this.peerKeyCache = readFileSync(file);
    }
    return this.peerKeyCache;
  }

  private checkpointFile(cellId: string): string | undefined {
    const f = path.join(this.options.stateDir, 'checkpoints', cellId, 'last.safetensors');
    return existsSync(f) ? f : undefined;
  }

  private cellByAttempt(attemptId: string): CellEntry | undefined {
    const id = this.state.byAttempt.get(attemptId);
    const c = id === undefined ? undefined : this.state.cells.get(id);
    return c?.state === 'running' && c.attemptId === attemptId ? c : undefined;
  }

  /** Bearer-token check on every call, and errors mapped to gRPC statuses. */
  private wrap<T extends Record<string, unknown>>(handlers: T): T {
    const token = this.options.token;
    const out: Record<string, unknown> = {};
    for (const [name, h] of Object.entries(handlers)) {
      // A server stream (no callback) ends with a status through emit('error'): destroy() would
      // drop the call without one and leave the client waiting for its deadline.
      out[name] = (
        call: { metadata: grpc.Metadata; emit: (event: 'error', e: Error) => boolean },
        cb?: (e: grpc.ServiceError | null, r?: unknown) => void,
      ) => {
        if (token) {
          const got = String(call.metadata.get('authorization')[0] ?? '');
          const want = `Bearer ${token}`;
          const ok = got.length === want.length && timingSafeEqual(Buffer.from(got), Buffer.from(want));
          if (!ok) {
            const e = status(
              grpcStatusOf('FERRY_ERR_UNAUTHENTICATED'),
              'missing or wrong bearer token [FERRY_ERR_UNAUTHENTICATED]',
            );
            if (cb) cb(e);
            else call.emit('error', e);
            return;
          }
        }
        try {
          (h as (c: unknown, cb?: unknown) => void)(call, cb);
        } catch (e) {
          // The registry decides what a client sees for ferry's own errors; anything else is a bug.
          const err = isFerryError(e)
            ? status(grpcStatusOf(e.code), `${e.message} [${e.code}]`)
            : status(grpc.status.INTERNAL, (e as Error).message);
          if (cb) cb(err);
          else call.emit('error', err);
        }
      };
    }
    return out as T;
  }

  private workerHandlers() {
    const ack = (ok: boolean, message = ''): Ack => ({ ok, message });
    const register: Handler<RegisterRequest, RegisterResponse> = (call, cb) => {
      const r = call.request;
      const sessionId = randomUUID();
      this.reregister.delete(r.workerId);
      const actions = this.apply({
        type: 'register',
        now: Date.now(),
        workerId: r.workerId,
        name: r.name,
        sessionId,
        backend: r.capabilities?.backend ?? '',
        device: r.capabilities?.device ?? '',
        running: r.running.map((x) => ({ cellId: x.cellId, attemptId: x.attemptId, epoch: x.epoch })),
        peerAddress: r.capabilities?.peerAddress ?? '',
      });
      cb(null, {
        sessionId,
        heartbeatIntervalMs: this.options.heartbeatIntervalMs,
        leaseMs: this.options.leaseMs,
        abandonAttempts: actions
          .filter((a) => a.type === 'stopAttempt')
          .map((a) => (a as { attemptId: string }).attemptId),
      });
    };
    const heartbeat: Handler<HeartbeatRequest, HeartbeatResponse> = (call, cb) => {
      const r = call.request;
      this.apply({
        type: 'heartbeat',
        now: Date.now(),
        workerId: r.workerId,
        sessionId: r.sessionId,
        running: r.running.map((x) => ({ cellId: x.cellId, attemptId: x.attemptId, epoch: x.epoch })),
      });
      const stops = [...(this.stops.get(r.workerId) ?? [])];
      this.stops.delete(r.workerId);
      const rereg = this.reregister.has(r.workerId);
      cb(null, { reregister: rereg, cancelAttempts: stops });
    };
    const poll: Handler<PollRequest, Assignment> = (call, cb) => {
      const r = call.request;
      const a = this.tryAssign(r.workerId, r.sessionId);
      if (a) return cb(null, a);
      if (this.reregister.has(r.workerId))
        return cb(status(grpc.status.FAILED_PRECONDITION, 'unknown session: register again'));
      const previous = this.pollers.get(r.workerId);
      if (previous) {
        clearTimeout(previous.timer);
        previous.done(Assignment.fromPartial({ hasAssignment: false }));
      }
      const timer = setTimeout(
        () => {
          this.pollers.delete(r.workerId);
          cb(null, Assignment.fromPartial({ hasAssignment: false }));
        },
        Math.min(r.waitMs || 10_000, 30_000),
      );
      this.pollers.set(r.workerId, { sessionId: r.sessionId, done: (x) => cb(null, x), timer });
      call.on('cancelled', () => {
        clearTimeout(timer);
        if (this.pollers.get(r.workerId)?.timer === timer) this.pollers.delete(r.workerId);
      });
    };
    const start: Handler<StartRequest, StartResponse> = (call, cb) => {
      const c = this.cellByAttempt(call.request.attemptId);
      if (!c) return cb(null, { ok: false, message: 'attempt is not leased' });
      const pinned = this.store.pinFingerprint(c.spec.dataset, c.spec.path, call.request.datasetFingerprint);
      if (pinned !== call.request.datasetFingerprint) {
        return cb(null, {
          ok: false,
          message: `dataset ${c.spec.dataset} (${c.spec.path}) on this worker differs from the sweep's copy (fingerprint ${call.request.datasetFingerprint.slice(0, 12)} vs ${pinned.slice(0, 12)}: file list or sizes)`,
        });
      }
      this.apply({ type: 'epoch', now: Date.now(), attemptId: c.attemptId!, epoch: c.epoch });
      cb(null, { ok: true, message: '' });
    };
    const reportEpoch: Handler<EpochReport, Ack> = (call, cb) => {
      const c = this.cellByAttempt(call.request.attemptId);
      if (!c) return cb(null, ack(false, 'attempt is not leased'));
      const metrics = EpochMetrics.fromPartial({ ...call.request.metrics, epoch: call.request.epoch });
      this.store.saveEpoch(c.id, call.request.attemptId, metrics);
      if (this.watchers.size > 0) {
        // Workers publish epochs to NATS themselves; the coordinator's own feed carries them too.
        const worker = c.workerId ? (this.state.workers.get(c.workerId)?.name ?? '') : '';
        const epoch = epochEvent(c.id, worker, metrics, false);
        const time = new Date().toISOString();
        for (const sweepId of c.sweepIds) this.sendToWatchers(FerryEvent.fromPartial({ sweepId, time, epoch }));
      }
      this.apply({ type: 'epoch', now: Date.now(), attemptId: call.request.attemptId, epoch: call.request.epoch + 1 });
      cb(null, ack(true));
    };
    const complete: Handler<CompleteRequest, Ack> = (call, cb) => {
      const c = this.cellByAttempt(call.request.attemptId);
      if (!c) return cb(null, ack(false, 'attempt is not leased; result not recorded'));
      this.store.setResult(c.id, CellResult.fromPartial(call.request.result ?? {}));
      this.apply({ type: 'complete', now: Date.now(), attemptId: call.request.attemptId });
      cb(null, ack(true));
    };
    const fail: Handler<FailRequest, Ack> = (call, cb) => {
      const r = call.request;
      this.apply({
        type: 'fail',
        now: Date.now(),
        attemptId: r.attemptId,
        message: `${r.code}: ${r.message}`,
        retryable: r.retryable,
        // This worker's copy, device or backend is the problem: other workers only, no attempt used.
        excludeWorker: isErrorCode(r.code) && retryOf(r.code) === 'elsewhere',
      });
      cb(null, ack(true));
    };
    const release: Handler<ReleaseRequest, Ack> = (call, cb) => {
      this.apply({ type: 'release', now: Date.now(), attemptId: call.request.attemptId, reason: call.request.reason });
      cb(null, ack(true));
    };
    /**
     * A checkpoint arrives as chunks of one stream. Chunks are written one at a time (the stream is
     * paused meanwhile: back-pressure), their offsets must follow each other from 0, the total is
     * capped, a stream idle for checkpointIdleMs is cut, and the finished file must match its
     * SHA-256 and parse as a ferry checkpoint before it replaces the previous one.
     */
    const uploadCheckpoint = (
      call: grpc.ServerReadableStream<CheckpointChunk, Ack>,
      cb: grpc.sendUnaryData<Ack>,
    ): void => {
      let fh: Awaited<ReturnType<typeof open>> | undefined;
      let tmp = '';
      let first: CheckpointChunk | undefined;
      let last: CheckpointChunk | undefined;
      let written = 0;
      let answered = false;
      let busy = false;
      const hash = createHash('sha256');
      const { maxCheckpointBytes, checkpointIdleMs } = this.options;
      const finish = async (result: Ack | grpc.ServiceError): Promise<void> => {
        if (answered) return;
        answered = true;
        clearTimeout(idle);
        await fh?.close().catch(() => undefined);
        fh = undefined;
        const ok = !(result instanceof Error) && result.ok;
        if (tmp && !ok) rmSync(tmp, { force: true });
        if (result instanceof Error) {
          cb(result);
          call.destroy();
        } else cb(null, result);
      };
      const refuse = (message: string): Promise<void> => {
        call.pause();
        return finish({ ok: false, message });
      };
      let idle = setTimeout(
        () =>
          void finish(
            status(grpc.status.DEADLINE_EXCEEDED, `checkpoint upload idle for ${checkpointIdleMs} ms; discarded`),
          ),
        checkpointIdleMs,
      );
      call.on('error', () => void finish({ ok: false, message: 'upload stream broke; checkpoint discarded' }));
      call.on('data', (chunk: CheckpointChunk) => {
        if (answered) return;
        call.pause();
        clearTimeout(idle);
        idle = setTimeout(
          () =>
            void finish(
              status(grpc.status.DEADLINE_EXCEEDED, `checkpoint upload idle for ${checkpointIdleMs} ms; discarded`),
            ),
          checkpointIdleMs,
        );
        busy = true;
        void (async () => {
          if (!first) {
            first = chunk;
            const c = this.cellByAttempt(chunk.attemptId);
            if (!c || c.id !== chunk.cellId) return refuse('attempt is not leased; checkpoint discarded');
            const dir = path.join(this.options.stateDir, 'checkpoints', c.id);
            mkdirSync(dir, { recursive: true });
            tmp = path.join(dir, `upload-${chunk.attemptId}.tmp`);
            fh = await open(tmp, 'w');
          }
          if (chunk.attemptId !== first.attemptId || chunk.cellId !== first.cellId)
            return refuse('every chunk of an upload belongs to one attempt and cell');
          if (chunk.offset !== written)
            return refuse(
              `chunk at offset ${chunk.offset}; the next byte expected is ${written} (chunks follow each other from 0)`,
            );
          if (written + chunk.data.length > maxCheckpointBytes)
            return refuse(`checkpoint larger than the ${maxCheckpointBytes}-byte limit (--max-checkpoint-mb)`);
          hash.update(chunk.data);
          await fh!.write(chunk.data, 0, chunk.data.length, written);
          written += chunk.data.length;
          if (chunk.last) last = chunk;
          if (!answered) call.resume();
          return undefined;
        })()
          .catch((e: Error) => finish(status(grpc.status.INTERNAL, e.message)))
          .finally(() => (busy = false));
      });
      call.on('end', () => {
        // 'end' can come while the last chunk is still being written: wait for it to land.
        const settle = async (): Promise<void> => {
          while (busy && !answered) await new Promise((r) => setTimeout(r, 5));
          if (answered) return;
          if (!first || !last || !tmp)
            return finish({ ok: false, message: 'upload ended without its last chunk; checkpoint discarded' });
          await fh?.close();
          fh = undefined;
          const digest = hash.digest('hex');
          if (digest !== last.sha256)
            return finish({ ok: false, message: `checkpoint checksum mismatch (${digest} != ${last.sha256})` });
          const problem = await checkpointProblem(tmp, CHECKPOINT_FORMAT);
          if (problem)
            return finish({
              ok: false,
              message: `not a ferry checkpoint: ${problem}; discarded, the previous one is kept`,
            });
          // A later epoch's upload replaces an earlier one atomically.
          renameSync(tmp, path.join(path.dirname(tmp), 'last.safetensors'));
          this.apply({ type: 'checkpoint', now: Date.now(), attemptId: last.attemptId, epochsDone: last.epochsDone });
          return finish({ ok: true, message: '' });
        };
        settle().catch((e: Error) => finish(status(grpc.status.INTERNAL, e.message)));
      });
    };
    const downloadCheckpoint = (call: grpc.ServerWritableStream<CheckpointRequest, CheckpointChunk>): void => {
      const c = this.cellByAttempt(call.request.attemptId);
      const file = c && c.id === call.request.cellId ? this.checkpointFile(c.id) : undefined;
      if (!c || !file) {
        call.emit(
          'error',
          status(grpcStatusOf('FERRY_ERR_NOT_FOUND'), 'no checkpoint for this attempt [FERRY_ERR_NOT_FOUND]'),
        );
        return;
      }
      const total = statSync(file).size;
      const hash = createHash('sha256');
      let offset = 0;
      const stream = createReadStream(file, { highWaterMark: CHUNK_BYTES });
      stream.on('data', (buf) => {
        const data = buf as Buffer;
        hash.update(data);
        const last = offset + data.length >= total;
        const more = call.write({
          attemptId: c.attemptId!,
          cellId: c.id,
          epochsDone: c.checkpointEpochs,
          offset,
          data,
          last,
          sha256: last ? hash.digest('hex') : '',
          totalBytes: total,
        });
        offset += data.length;
        if (!more) {
          stream.pause();
          call.once('drain', () => stream.resume());
        }
      });
      stream.on('end', () => call.end());
      stream.on('error', (e) => call.emit('error', status(grpc.status.INTERNAL, e.message)));
    };
    return {
      register,
      heartbeat,
      poll,
      start,
      reportEpoch,
      complete,
      fail,
      release,
      uploadCheckpoint,
      downloadCheckpoint,
    };
  }

  /**
   * A sweep's counts and one page of its cells (null: no cells, as ListSweeps answers): from
   * `offset`, at most `limit` cells (0: no count limit) and about PAGE_BYTES encoded, so that a
   * 10,000-cell sweep never makes an answer larger than a client accepts.
   */
  private sweepStatus(
    sweepId: string,
    page: { offset: number; limit: number; withResults: boolean } | null,
  ): SweepStatus | undefined {
    const row = this.store.sweep(sweepId);
    if (!row) return undefined;
    const cells = [...this.state.cells.values()]
      .filter((c) => c.sweepIds.includes(sweepId))
      .sort((a, b) => a.seq - b.seq);
    const count = (s: string): number => cells.filter((c) => c.state === s).length;
    const out: CellStatus[] = [];
    let next = 0;
    if (page) {
      let bytes = 0;
      for (let i = page.offset; i < cells.length; i++) {
        const cell = this.cellStatus(cells[i]!, page.withResults);
        const size = CellStatus.encode(cell).finish().length;
        if (out.length > 0 && ((page.limit > 0 && out.length >= page.limit) || bytes + size > PAGE_BYTES)) {
          next = i;
          break;
        }
        out.push(cell);
        bytes += size;
      }
    }
    return {
      sweepId,
      name: row.name,
      pending: count('pending'),
      running: count('running'),
      done: count('done'),
      failed: count('failed'),
      cancelled: count('cancelled'),
      createdAt: row.createdAt,
      cells: out,
      totalCells: cells.length,
      nextOffset: next,
    };
  }

  private cellStatus(c: CellEntry, withResult: boolean): CellStatus {
    const result = c.state === 'done' && withResult ? this.store.result(c.id) : undefined;
    return {
      cellId: c.id,
      spec: toProtoSpec(c.spec),
      state: c.state,
      attempts: c.attempts,
      worker: c.workerId ? (this.state.workers.get(c.workerId)?.name ?? c.workerId) : '',
      epoch: c.epoch,
      bestValAccuracy: c.state === 'done' ? this.store.bestValAccuracy(c.id) : 0,
      error: c.error ?? '',
      ...(result ? { result } : {}),
      checkpointEpochs: c.checkpointEpochs,
      // One query per running cell (a handful), not per pending one: ferry run asks twice a second.
      lastValAccuracy: c.state === 'running' ? this.store.lastValAccuracy(c.id) : 0,
    };
  }

  private eventHandlers() {
    /** Everything the store holds, then each event as it happens, until the client goes. */
    const watch = (call: grpc.ServerWritableStream<WatchRequest, FerryEvent>): void => {
      for (const e of storeEvents(this.store)) call.write(e.event);
      call.write(FerryEvent.fromPartial({ time: new Date().toISOString(), historyEnd: {} }));
      this.watchers.add(call);
      const drop = (): void => void this.watchers.delete(call);
      call.on('cancelled', drop);
      call.on('close', drop);
      call.on('error', drop);
    };
    return { watch };
  }

  private adminHandlers() {
    const submitSweep: Handler<SubmitSweepRequest, SubmitSweepResponse> = (call, cb) => {
      const r = call.request;
      const sweep = parseSweep(r.yaml, r.fileName || 'sweep.yaml');
      const ids = sweep.cells.map((c) => c.id).sort();
      const sweepId = `${sweep.name}-${createHash('sha256').update(ids.join(',')).digest('hex').slice(0, 8)}`;
      const before = new Set(this.state.cells.keys());
      if (!this.store.sweep(sweepId))
        this.store.addSweep({ id: sweepId, name: sweep.name, yaml: r.yaml, createdAt: new Date().toISOString() });
      for (const [name, fp] of Object.entries(r.datasetFingerprints)) {
        const ds = sweep.cells.find((c) => c.spec.dataset === name);
        if (ds) this.store.pinFingerprint(name, ds.spec.path, fp);
      }
      const created = this.store.sweep(sweepId)!.createdAt;
      this.emitEvent(
        SUBJECTS.sweep(sweepId),
        FerryEvent.fromPartial({
          sweepId,
          time: new Date().toISOString(),
          sweep: { name: sweep.name, cells: sweep.cells.length, createdAt: created },
        }),
      );
      this.apply({
        type: 'submit',
        now: Date.now(),
        sweepId,
        cells: sweep.cells,
        ...(r.maxAttempts ? { maxAttempts: r.maxAttempts } : {}),
      });
      // A resubmission adds no cell events for existing cells: republish their state for this sweep.
      if (this.publishing)
        for (const c of sweep.cells)
          if (before.has(c.id)) this.publish([{ type: 'saveCell', cell: this.state.cells.get(c.id)! }]);
      cb(null, {
        sweepId,
        name: sweep.name,
        cells: sweep.cells.length,
        newCells: sweep.cells.filter((c) => !before.has(c.id)).length,
      });
    };
    const getSweep: Handler<SweepRef, SweepStatus> = (call, cb) => {
      const r = call.request;
      const page = { offset: r.offset, limit: r.limit, withResults: r.withResults };
      const s = this.sweepStatus(r.sweepId, page) ?? this.sweepStatus(this.latestSweepNamed(r.sweepId) ?? '', page);
      if (!s)
        return cb(
          status(grpcStatusOf('FERRY_ERR_NOT_FOUND'), `no sweep ${call.request.sweepId} [FERRY_ERR_NOT_FOUND]`),
        );
      cb(null, s);
    };
    const listSweeps: Handler<ListSweepsRequest, ListSweepsResponse> = (_call, cb) => {
      cb(null, { sweeps: this.store.sweeps().map((s) => this.sweepStatus(s.id, null)!) });
    };
    const byRef =
      (type: 'cancel' | 'retry'): Handler<SweepRef, CountResponse> =>
      (call, cb) => {
        const id = this.store.sweep(call.request.sweepId)
          ? call.request.sweepId
          : this.latestSweepNamed(call.request.sweepId);
        if (!id)
          return cb(
            status(grpcStatusOf('FERRY_ERR_NOT_FOUND'), `no sweep ${call.request.sweepId} [FERRY_ERR_NOT_FOUND]`),
          );
        const actions = this.apply({ type, now: Date.now(), sweepId: id });
        cb(null, { count: actions.filter((a) => a.type === 'saveCell').length });
      };
    const listWorkers: Handler<ListWorkersRequest, ListWorkersResponse> = (_call, cb) => {
      const running = (id: string): string[] => {
        const cell = this.state.byWorker.get(id);
        return cell ? [cell] : [];
      };
      cb(null, {
        workers: [...this.state.workers.values()].map((w) => ({
          workerId: w.id,
          name: w.name,
          capabilities: {
            backend: w.backend,
            device: w.device,
            memoryBytes: 0,
            ferryVersion: '',
            host: '',
            gpuIndex: -1,
            peerAddress: w.peerAddress,
          },
          state: w.state,
          lastSeen: new Date(w.lastSeen).toISOString(),
          runningCells: running(w.id),
        })),
      });
    };
    return {
      submitSweep,
      getSweep,
      listSweeps,
      cancelSweep: byRef('cancel'),
      retryFailed: byRef('retry'),
      listWorkers,
    };
  }

  /** A sweep may be named by its id or by its name (the most recent with that name). */
  private latestSweepNamed(name: string): string | undefined {
    return this.store
      .sweeps()
      .filter((s) => s.name === name)
      .at(-1)?.id;
  }
}
