import { isErrorCode, retryOf, sourceCellOf } from '@ferry/common';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  Assignment,
  CellResult,
  EpochMetrics,
  FerryEvent,
  FileKind,
  type Ack,
  type CoordinatorServer,
  type PollRequest,
  type RegisterRequest,
  type RegisterResponse,
  type StartResponse,
} from '@ferry/protocol';
import { epochEvent } from './events.js';
import type { CoordinatorHost } from './host.js';
import { status } from './rpc.js';
import type { SchedulerAction, SchedulerEvent } from './scheduler-types.js';
import { toProtoSpec } from './spec.js';

const ack = (ok: boolean, message = ''): Ack => ({ ok, message });
const NO_ASSIGNMENT = Assignment.fromPartial({ hasAssignment: false });

interface Poller {
  readonly sessionId: string;
  readonly done: (a: Assignment) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * The worker-facing `Coordinator` service: sessions, long polls, leases, epochs, results,
 * failures, checkpoints. Keeps what only this service needs between calls: the open long polls,
 * the attempts each worker must stop, the workers that must register again.
 */
export class WorkerService {
  private readonly pollers = new Map<string, Poller>();
  private readonly stops = new Map<string, Set<string>>();
  private readonly reregister = new Set<string>();
  private peerKey: Buffer | undefined;

  constructor(private readonly host: CoordinatorHost) {}

  /** Called after every scheduler step: remember stops and re-registrations, offer freed work. */
  applied(event: SchedulerEvent, actions: readonly SchedulerAction[]): void {
    for (const a of actions) {
      if (a.type === 'stopAttempt')
        this.stops.set(a.workerId, new Set([...(this.stops.get(a.workerId) ?? []), a.attemptId]));
      if (a.type === 'reregister') this.reregister.add(a.workerId);
    }
    if (event.type !== 'poll' && actions.some((a) => a.type === 'saveCell')) this.wakePollers();
  }

  /** Answers every open long poll with no assignment (shutdown). */
  close(): void {
    for (const p of this.pollers.values()) {
      clearTimeout(p.timer);
      p.done(NO_ASSIGNMENT);
    }
    this.pollers.clear();
  }

  handlers(): CoordinatorServer {
    const h = this.host;
    return {
      register: (call, cb) => cb(null, this.register(call.request)),
      heartbeat: (call, cb) => {
        const r = call.request;
        h.apply({
          type: 'heartbeat',
          now: Date.now(),
          workerId: r.workerId,
          sessionId: r.sessionId,
          running: r.running,
        });
        const stops = [...(this.stops.get(r.workerId) ?? [])];
        this.stops.delete(r.workerId);
        cb(null, { reregister: this.reregister.has(r.workerId), cancelAttempts: stops });
      },
      poll: (call, cb) => this.poll(call, cb),
      start: (call, cb) => cb(null, this.start(call.request.attemptId, call.request.datasetFingerprint)),
      reportEpoch: (call, cb) => {
        const r = call.request;
        cb(null, this.reportEpoch(r.attemptId, EpochMetrics.fromPartial({ ...r.metrics, epoch: r.epoch })));
      },
      complete: (call, cb) => {
        const c = h.cellByAttempt(call.request.attemptId);
        if (!c) return cb(null, ack(false, 'attempt is not leased; result not recorded'));
        h.store.setResult(c.id, CellResult.fromPartial(call.request.result ?? {}));
        h.apply({ type: 'complete', now: Date.now(), attemptId: call.request.attemptId });
        cb(null, ack(true));
      },
      fail: (call, cb) => {
        const r = call.request;
        h.apply({
          type: 'fail',
          now: Date.now(),
          attemptId: r.attemptId,
          message: `${r.code}: ${r.message}`,
          retryable: r.retryable,
          // This worker's copy, device or backend is the problem: other workers only, no attempt used.
          excludeWorker: isErrorCode(r.code) && retryOf(r.code) === 'elsewhere',
        });
        cb(null, ack(true));
      },
      release: (call, cb) => {
        h.apply({ type: 'release', now: Date.now(), attemptId: call.request.attemptId, reason: call.request.reason });
        cb(null, ack(true));
      },
      uploadCheckpoint: (call, cb) => h.checkpoints.upload(call, cb),
      downloadCheckpoint: (call) => h.checkpoints.download(call),
    };
  }

  private register(r: RegisterRequest): RegisterResponse {
    const sessionId = randomUUID();
    this.reregister.delete(r.workerId);
    const actions = this.host.apply({
      type: 'register',
      now: Date.now(),
      workerId: r.workerId,
      name: r.name,
      sessionId,
      backend: r.capabilities?.backend ?? '',
      device: r.capabilities?.device ?? '',
      running: r.running,
      peerAddress: r.capabilities?.peerAddress ?? '',
      host: r.capabilities?.host ?? '',
      slurmJob: r.capabilities?.slurmJob ?? '',
      ferryVersion: r.capabilities?.ferryVersion ?? '',
    });
    return {
      sessionId,
      heartbeatIntervalMs: this.host.options.heartbeatIntervalMs,
      leaseMs: this.host.options.leaseMs,
      abandonAttempts: actions.flatMap((a) => (a.type === 'stopAttempt' ? [a.attemptId] : [])),
    };
  }

  /** A long poll: an assignment now, or the call held until one frees up (or waitMs passes). */
  private poll(call: grpc.ServerUnaryCall<PollRequest, Assignment>, cb: grpc.sendUnaryData<Assignment>): void {
    const r = call.request;
    const a = this.tryAssign(r.workerId, r.sessionId);
    if (a) return cb(null, a);
    if (this.reregister.has(r.workerId))
      return cb(status(grpc.status.FAILED_PRECONDITION, 'unknown session: register again'));
    const previous = this.pollers.get(r.workerId);
    if (previous) {
      clearTimeout(previous.timer);
      previous.done(NO_ASSIGNMENT);
    }
    const timer = setTimeout(
      () => {
        this.pollers.delete(r.workerId);
        cb(null, NO_ASSIGNMENT);
      },
      Math.min(r.waitMs || 10_000, 30_000),
    );
    this.pollers.set(r.workerId, { sessionId: r.sessionId, done: (x) => cb(null, x), timer });
    call.on('cancelled', () => {
      clearTimeout(timer);
      if (this.pollers.get(r.workerId)?.timer === timer) this.pollers.delete(r.workerId);
    });
  }

  private start(attemptId: string, fingerprint: string): StartResponse {
    const c = this.host.cellByAttempt(attemptId);
    if (!c) return { ok: false, message: 'attempt is not leased' };
    const pinned = this.host.store.pinFingerprint(c.spec.dataset, c.spec.path, fingerprint);
    if (pinned !== fingerprint)
      return {
        ok: false,
        message: `dataset ${c.spec.dataset} (${c.spec.path}) on this worker differs from the sweep's copy (fingerprint ${fingerprint.slice(0, 12)} vs ${pinned.slice(0, 12)}: file list or sizes)`,
      };
    this.host.apply({ type: 'epoch', now: Date.now(), attemptId, epoch: c.epoch });
    return { ok: true, message: '' };
  }

  private reportEpoch(attemptId: string, metrics: EpochMetrics): Ack {
    const h = this.host;
    const c = h.cellByAttempt(attemptId);
    if (!c) return ack(false, 'attempt is not leased');
    h.store.saveEpoch(c.id, attemptId, metrics);
    if (h.feed.watching) {
      // Workers publish epochs to NATS themselves; the coordinator's own feed carries them too.
      const epoch = epochEvent(c.id, h.workerName(c.workerId), metrics, false);
      const time = new Date().toISOString();
      for (const sweepId of c.sweepIds) h.feed.toWatchers(FerryEvent.fromPartial({ sweepId, time, epoch }));
    }
    h.apply({ type: 'epoch', now: Date.now(), attemptId, epoch: metrics.epoch + 1 });
    return ack(true);
  }

  /** Offers work to every waiting long poll (after anything that may have freed or added cells). */
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
    const h = this.host;
    const actions = h.apply({ type: 'poll', now: Date.now(), workerId, sessionId, newAttemptId: randomUUID() });
    // Gang members waiting in their own long polls get their assignment when woken.
    if (actions.some((a) => a.type === 'assign' && a.workerId !== workerId)) setImmediate(() => this.wakePollers());
    const assign = actions.find((a) => a.type === 'assign' && a.workerId === workerId);
    if (!assign || assign.type !== 'assign') return undefined;
    const cell = h.state.cells.get(assign.cellId)!;
    return {
      hasAssignment: true,
      sweepId: cell.sweepIds[0] ?? '',
      cellId: cell.id,
      attemptId: assign.attemptId,
      spec: toProtoSpec(cell.spec),
      checkpointEpochs: h.checkpoints.file(cell.id) ? cell.checkpointEpochs : 0,
      leaseMs: h.options.leaseMs,
      rank: assign.rank,
      worldSize: assign.members.length,
      members: [...assign.members],
      generation: assign.generation,
      peerAddresses: assign.members.map((m) => h.state.workers.get(m)?.peerAddress ?? ''),
      groupSecret: assign.members.length > 1 ? this.groupSecret(`${cell.id}/${assign.generation}`) : '',
      sourceWeightsSha256: this.sourceSha(cell.spec.weights),
    };
  }

  /** The digest of a stage cell's source's best weights ('' for any other cell, or none held). */
  private sourceSha(weights: string): string {
    const source = sourceCellOf(weights);
    return source === null ? '' : (this.host.checkpoints.sha256(source, FileKind.FILE_KIND_BEST) ?? '');
  }

  /**
   * A data-parallel group's secret: HMAC-SHA256 of its name under a key kept in the state folder
   * (created once), so every member of a generation gets the same secret, across coordinator
   * restarts too, and no group can derive another's.
   */
  private groupSecret(group: string): string {
    if (!this.peerKey) {
      const file = path.join(this.host.options.stateDir, 'peer.key');
      if (!existsSync(file)) writeFileSync(file, randomBytes(32), { mode: 0o600, flag: 'wx' });
      this.peerKey = readFileSync(file);
    }
    return createHmac('sha256', this.peerKey).update(group).digest('hex');
  }
}
