import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import {
  datasetFingerprint,
  isFerryError,
  runCell,
  selectBackend,
  type BackendOptions,
  type BackendRequest,
  type BackendSelection,
} from '@ferry/core';
import { retryOf } from '@ferry/common';
import type { Assignment, CheckpointChunk, CoordinatorClient, RunningCell } from '@ferry/protocol';
import { EventPublisher, type NatsTarget } from '@ferry/events';
import { FerryEvent, SUBJECTS } from '@ferry/protocol';
import {
  ChunkSink,
  DEFAULT_BACKOFF,
  coordinatorClient,
  fileChunks,
  isUnavailable,
  metadataFor,
  sendChunks,
  unary,
  withBackoff,
  type BackoffPolicy,
  type ConnectionOptions,
} from '@ferry/client';
import { GrpcRing, PeerServer } from './peer.js';
import { cellConfigFromSpec } from './spec.js';
import { wireMetrics, wireResult } from './wire.js';

export interface WorkerOptions {
  readonly connection: ConnectionOptions;
  /** Where this worker finds datasets (a sweep's dataset paths are relative to it). */
  readonly dataRoot: string;
  /** Local scratch: per-cell checkpoints, the worker id. */
  readonly workDir: string;
  /** Weights and feature cache. */
  readonly cacheDir: string;
  readonly backend?: BackendRequest;
  readonly backendOptions?: BackendOptions;
  readonly name?: string;
  readonly pollWaitMs?: number;
  readonly decodeThreads?: number;
  readonly gpuIndex?: number;
  readonly log?: (line: string) => void;
  /** Reconnect backoff bounds. */
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  /** Publish step, epoch and heartbeat events to NATS. Training never waits on it. */
  readonly nats?: NatsTarget;
  /** Least time between two step events of a cell. */
  readonly stepEventMs?: number;
  /** Host the Peer service (data-parallel groups) binds on. Default 127.0.0.1. */
  readonly peerHost?: string;
  /** Its port (default: a free one). */
  readonly peerPort?: number;
  /** The host other workers reach it by (pod IP, service name); default: peerHost, or the hostname for 0.0.0.0. */
  readonly peerAdvertise?: string;
  /**
   * Bind the Peer service off loopback without TLS. Without it, a non-loopback peerHost needs the
   * connection's TLS certificate and key (the Peer link uses them, neighbours verify with its CA).
   */
  readonly peerInsecure?: boolean;
  /** Deadline of each collective (a lost rank aborts the group within it). Default 60 s. */
  readonly collectiveDeadlineMs?: number;
}

export type WorkerLifecycle = 'created' | 'connecting' | 'idle' | 'running' | 'stopping' | 'stopped';

/** Errors that another attempt cannot fix. */

/**
 * One worker process (one GPU): registers, heartbeats, long-polls for cells, runs each with the
 * engine, reports epochs, uploads a checkpoint every epoch, and resumes from the coordinator's
 * checkpoint when a cell had started elsewhere.
 */
export class FerryWorker {
  private lifecycle: WorkerLifecycle = 'created';
  private readonly client: CoordinatorClient;
  private session: { id: string; heartbeatMs: number } | null = null;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private current: {
    cellId: string;
    sweepId: string;
    attemptId: string;
    epoch: number;
    abort: AbortController;
    why: 'shutdown' | 'cancelled' | null;
    imagesPerSec: number;
  } | null = null;
  private readonly events: EventPublisher | null;
  private readonly peer: PeerServer;
  /** The CA this worker's Peer neighbours present certificates of (TLS on the Peer link), if any. */
  private readonly peerTlsCa: Buffer | undefined;
  private peerAddress = '';
  /** Attempts already run here: a re-delivered assignment of one of them is not run twice. */
  private readonly ranAttempts = new Set<string>();
  /**
   * The attempt this worker's previous process was running when it died (kill -9, out of memory),
   * from `<workDir>/attempt.json`: claimed at registration so that the coordinator keeps the lease,
   * then resumed from the last checkpoint when the coordinator delivers it again. Single-worker
   * cells only: a data-parallel group cannot take a rank back mid-generation (it re-forms).
   */
  private recovered: RunningCell | null = null;
  private readonly claimFile: string;
  private stopping = false;
  private wake: (() => void) | null = null;
  readonly workerId: string;
  readonly name: string;

  private constructor(
    readonly options: WorkerOptions,
    readonly backend: BackendSelection,
  ) {
    this.client = coordinatorClient(options.connection);
    mkdirSync(options.workDir, { recursive: true });
    const idFile = path.join(options.workDir, 'worker-id');
    this.workerId = existsSync(idFile) ? readFileSync(idFile, 'utf8').trim() : randomUUID();
    writeFileSync(idFile, `${this.workerId}\n`);
    this.claimFile = path.join(options.workDir, 'attempt.json');
    this.recovered = readClaim(this.claimFile);
    this.name = options.name ?? `${os.hostname()}-${options.gpuIndex ?? process.pid}`;
    const peerHost = options.peerHost ?? '127.0.0.1';
    const tls = options.connection.tls;
    this.peerTlsCa = tls?.cert && tls.key && tls.ca ? readFileSync(tls.ca) : undefined;
    this.peer = new PeerServer({
      host: peerHost,
      port: options.peerPort ?? 0,
      advertiseHost: options.peerAdvertise ?? (peerHost === '0.0.0.0' ? os.hostname() : peerHost),
      ...(tls?.cert && tls.key
        ? {
            tls: {
              cert: readFileSync(tls.cert),
              key: readFileSync(tls.key),
              ...(this.peerTlsCa ? { ca: this.peerTlsCa } : {}),
            },
          }
        : {}),
      ...(options.peerInsecure ? { insecure: true } : {}),
    });
    this.events = options.nats
      ? new EventPublisher({
          target: { ...options.nats, name: options.nats.name ?? `ferry-worker-${this.name}` },
          log: (l) => this.log(l),
        })
      : null;
  }

  private emit(kind: 'step' | 'epoch' | 'worker', event: FerryEvent): void {
    if (!this.events) return;
    const cell = event.step?.cellId ?? event.epoch?.cellId ?? '';
    const subject =
      kind === 'step'
        ? SUBJECTS.step(event.sweepId, cell)
        : kind === 'epoch'
          ? SUBJECTS.epoch(event.sweepId, cell)
          : SUBJECTS.worker(event.sweepId, this.workerId);
    this.events.publish(subject, event);
  }

  static async create(options: WorkerOptions): Promise<FerryWorker> {
    const backend = await selectBackend(options.backend ?? 'auto', options.backendOptions);
    return new FerryWorker(options, backend);
  }

  get status(): WorkerLifecycle {
    return this.lifecycle;
  }

  private log(line: string): void {
    this.options.log?.(`[worker ${this.name}] ${line}`);
  }

  private conn(): ConnectionOptions {
    return this.options.connection;
  }

  private running(): RunningCell[] {
    if (this.current)
      return [{ cellId: this.current.cellId, attemptId: this.current.attemptId, epoch: this.current.epoch }];
    return this.recovered ? [this.recovered] : [];
  }

  private registering: Promise<void> | null = null;

  /** One registration at a time, whoever notices the session is gone (poll loop or heartbeat). */
  private ensureSession(): Promise<void> {
    if (this.session) return Promise.resolve();
    this.registering ??= this.register().finally(() => (this.registering = null));
    return this.registering;
  }

  private async register(): Promise<void> {
    this.lifecycle = 'connecting';
    const r = await withBackoff(
      () =>
        unary(
          this.client.register,
          this.client,
          {
            workerId: this.workerId,
            name: this.name,
            capabilities: {
              backend: this.backend.name,
              device: this.backend.device,
              memoryBytes: os.totalmem(),
              ferryVersion: '0.1.0',
              host: os.hostname(),
              gpuIndex: this.options.gpuIndex ?? -1,
              peerAddress: this.peerAddress,
            },
            running: this.running(),
          },
          this.conn(),
          10_000,
        ),
      {
        policy: this.backoff,
        retry: () => !this.stopping,
        onRetry: (e, delay) =>
          this.log(
            `cannot reach the coordinator at ${this.conn().address} (${(e as grpc.ServiceError).details ?? (e as Error).message}); retrying in ${delay} ms`,
          ),
      },
    ).catch((e: unknown) => {
      if (this.stopping) return null;
      throw e;
    });
    if (!r) return;
    this.session = { id: r.sessionId, heartbeatMs: r.heartbeatIntervalMs };
    if (this.current && r.abandonAttempts.includes(this.current.attemptId)) this.abortCurrent('cancelled');
    if (this.recovered && r.abandonAttempts.includes(this.recovered.attemptId))
      this.dropClaim('the coordinator moved it on');
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), r.heartbeatIntervalMs);
    this.lifecycle = this.current ? 'running' : 'idle';
    this.log(`registered with ${this.conn().address} (backend ${this.backend.name})`);
  }

  private get backoff(): BackoffPolicy {
    return {
      minMs: this.options.reconnectMinMs ?? DEFAULT_BACKOFF.minMs,
      maxMs: this.options.reconnectMaxMs ?? DEFAULT_BACKOFF.maxMs,
    };
  }

  private async heartbeat(): Promise<void> {
    const cur = this.current;
    this.emit(
      'worker',
      FerryEvent.fromPartial({
        sweepId: cur?.sweepId ?? SUBJECTS.CLUSTER,
        time: new Date().toISOString(),
        worker: {
          workerId: this.workerId,
          name: this.name,
          backend: this.backend.name,
          device: this.backend.device,
          state: 'alive',
          imagesPerSec: cur?.imagesPerSec ?? 0,
          cellId: cur?.cellId ?? '',
        },
      }),
    );
    if (!this.session) return;
    try {
      const r = await unary(
        this.client.heartbeat,
        this.client,
        {
          workerId: this.workerId,
          sessionId: this.session.id,
          running: this.running(),
          imagesPerSec: cur?.imagesPerSec ?? 0,
        },
        this.conn(),
        5_000,
      );
      // For `ferry health --worker`: the time of the last heartbeat the coordinator answered.
      writeFileSync(path.join(this.options.workDir, 'heartbeat'), `${new Date().toISOString()}\n`);
      if (this.current && r.cancelAttempts.includes(this.current.attemptId)) {
        this.log(`coordinator cancelled attempt ${this.current.attemptId}`);
        this.abortCurrent('cancelled');
      }
      if (r.reregister) this.session = null;
    } catch {
      // The coordinator may be restarting: register again (with backoff) right away, even while
      // training, so that a restarted coordinator sees this worker claim its cell within a lease.
      this.session = null;
    }
    if (!this.session) {
      this.wake?.();
      void this.ensureSession();
    }
  }

  private dropClaim(why: string): void {
    if (!this.recovered) return;
    this.log(
      `not resuming attempt ${this.recovered.attemptId} of cell ${this.recovered.cellId} after a restart: ${why}`,
    );
    this.recovered = null;
    rmSync(this.claimFile, { force: true });
  }

  private abortCurrent(why: 'shutdown' | 'cancelled'): void {
    if (!this.current) return;
    this.current.why = why;
    this.current.abort.abort(new Error(why));
  }

  /** Runs until shutdown(): register, poll, train, repeat. */
  async run(): Promise<void> {
    this.peerAddress = await this.peer.start();
    while (!this.stopping) {
      if (!this.session) await this.ensureSession();
      if (this.stopping || !this.session) break;
      let a: Assignment;
      try {
        a = await new Promise<Assignment>((resolve, reject) => {
          const call = this.client.poll(
            { workerId: this.workerId, sessionId: this.session!.id, waitMs: this.options.pollWaitMs ?? 10_000 },
            metadataFor(this.conn()),
            { deadline: Date.now() + (this.options.pollWaitMs ?? 10_000) + 5_000 },
            (e, r) => (e ? reject(e) : resolve(r)),
          );
          this.wake = () => call.cancel();
        });
      } catch {
        this.session = null;
        continue;
      } finally {
        this.wake = null;
      }
      if (this.recovered) {
        // The coordinator delivers a kept attempt again (with its latest checkpoint); anything else means it is gone.
        if (a.hasAssignment && a.attemptId === this.recovered.attemptId)
          this.log(`resuming attempt ${a.attemptId} of cell ${a.cellId} after a restart`);
        else this.dropClaim('the coordinator did not deliver it again');
        this.recovered = null;
      }
      if (a.hasAssignment && this.ranAttempts.has(a.attemptId)) {
        // A group member that finished before rank 0 reported: wait for the attempt to close.
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (a.hasAssignment) {
        this.ranAttempts.add(a.attemptId);
        await this.runAssignment(a);
      }
    }
    clearInterval(this.heartbeatTimer);
    this.client.close();
    await this.peer.stop();
    this.emit(
      'worker',
      FerryEvent.fromPartial({
        sweepId: SUBJECTS.CLUSTER,
        time: new Date().toISOString(),
        worker: {
          workerId: this.workerId,
          name: this.name,
          backend: this.backend.name,
          device: this.backend.device,
          state: 'stopped',
        },
      }),
    );
    await this.events?.close();
    this.lifecycle = 'stopped';
  }

  /** SIGTERM: stop the running cell (its last epoch checkpoint is on the coordinator), release its lease. */
  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.lifecycle = 'stopping';
    this.abortCurrent('shutdown');
    this.wake?.();
  }

  private async runAssignment(a: Assignment): Promise<void> {
    const spec = a.spec!;
    const dir = path.join(this.options.workDir, 'cells', a.cellId);
    const abort = new AbortController();
    this.current = {
      cellId: a.cellId,
      sweepId: a.sweepId,
      attemptId: a.attemptId,
      epoch: a.checkpointEpochs,
      abort,
      why: null,
      imagesPerSec: 0,
    };
    if (a.worldSize <= 1)
      writeFileSync(
        this.claimFile,
        `${JSON.stringify({ cellId: a.cellId, attemptId: a.attemptId, epoch: a.checkpointEpochs } satisfies RunningCell)}\n`,
      );
    let lastStepEvent = 0;
    this.lifecycle = 'running';
    const label = `${spec.dataset} ${spec.color} ${spec.strategy} ${spec.model} seed ${spec.seed}`;
    this.log(
      `cell ${a.cellId} (${label}): attempt ${a.attemptId}${a.checkpointEpochs ? `, resuming after epoch ${a.checkpointEpochs}` : ''}`,
    );
    let uploads: Promise<void> = Promise.resolve();
    let ring: GrpcRing | undefined;
    try {
      // The coordinator's checkpoint is the truth: drop local leftovers of earlier attempts.
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      if (a.checkpointEpochs > 0) await this.download(a, path.join(dir, 'last.safetensors'));
      const datasetDir = path.resolve(this.options.dataRoot, spec.path);
      if (!existsSync(datasetDir)) {
        await this.fail(
          a.attemptId,
          'FERRY_ERR_DATASET_MISMATCH',
          `dataset ${spec.dataset} is not on this worker (${datasetDir})`,
          true,
        );
        return;
      }
      const fp = await datasetFingerprint(datasetDir);
      const started = await unary(
        this.client.start,
        this.client,
        { attemptId: a.attemptId, datasetFingerprint: fp.fingerprint, fileCount: fp.files },
        this.conn(),
        10_000,
      );
      if (!started.ok) {
        await this.fail(a.attemptId, 'FERRY_ERR_DATASET_MISMATCH', started.message, true);
        return;
      }
      const config = cellConfigFromSpec(spec, this.options.dataRoot, this.options.cacheDir);
      const leader = a.rank === 0;
      if (a.worldSize > 1) {
        const right = a.peerAddresses[(a.rank + 1) % a.worldSize];
        if (!right) throw new Error(`rank ${a.rank}: no peer address for rank ${(a.rank + 1) % a.worldSize}`);
        ring = new GrpcRing(
          a.rank,
          a.worldSize,
          `${a.cellId}/${a.generation}`,
          right,
          this.peer,
          a.groupSecret,
          this.peerTlsCa,
        );
        this.log(`cell ${a.cellId}: rank ${a.rank} of ${a.worldSize} (generation ${a.generation})`);
      }
      const result = await runCell(config, {
        ...(ring ? { distributed: { transport: ring, deadlineMs: this.options.collectiveDeadlineMs ?? 60_000 } } : {}),
        outDir: dir,
        cacheDir: path.join(this.options.cacheDir, 'features'),
        backend: this.backend,
        signal: abort.signal,
        ...(this.options.decodeThreads ? { decodeThreads: this.options.decodeThreads } : {}),
        onWarning: (m) => this.log(`warning: ${m}`),
        onProgress: (p) => {
          const time = new Date().toISOString();
          if (!leader) {
            if (p.type === 'epoch') this.current!.epoch = p.metrics.epoch + 1;
            return;
          }
          if (p.type === 'step') {
            this.current!.imagesPerSec = p.imagesPerSec;
            const now = Date.now();
            if (now - lastStepEvent >= (this.options.stepEventMs ?? 500) || p.step === p.stepsPerEpoch) {
              lastStepEvent = now;
              this.emit(
                'step',
                FerryEvent.fromPartial({
                  sweepId: a.sweepId,
                  time,
                  step: {
                    cellId: a.cellId,
                    worker: this.name,
                    epoch: p.epoch,
                    step: p.step,
                    stepsPerEpoch: p.stepsPerEpoch,
                    loss: p.loss,
                    imagesPerSec: p.imagesPerSec,
                    etaMs: p.etaMs,
                    epochs: spec.epochs,
                  },
                }),
              );
            }
          } else if (p.type === 'epoch') {
            const m = p.metrics;
            this.emit(
              'epoch',
              FerryEvent.fromPartial({
                sweepId: a.sweepId,
                time,
                epoch: { ...wireMetrics(m), cellId: a.cellId, worker: this.name, best: p.best },
              }),
            );
          }
          if (p.type === 'epoch') {
            this.current!.epoch = p.metrics.epoch + 1;
            void unary(
              this.client.reportEpoch,
              this.client,
              { attemptId: a.attemptId, epoch: p.metrics.epoch, metrics: wireMetrics(p.metrics) },
              this.conn(),
              10_000,
            ).catch(() => undefined);
          } else if (p.type === 'checkpoint') {
            const epochsDone = p.epoch + 1;
            uploads = uploads
              .then(() => this.upload(a, p.file, epochsDone))
              .catch((e: Error) => this.log(`checkpoint upload failed: ${e.message}`));
          }
        },
      });
      await uploads;
      if (!leader) {
        this.log(`cell ${a.cellId}: rank ${a.rank} done`);
        return;
      }
      const ack = await this.retrying(() =>
        unary(
          this.client.complete,
          this.client,
          { attemptId: a.attemptId, result: wireResult(result) },
          this.conn(),
          30_000,
        ),
      );
      this.log(
        `cell ${a.cellId}: best val ${(result.bestValAccuracy * 100).toFixed(1)}%${ack.ok ? '' : ` (not recorded: ${ack.message})`}`,
      );
    } catch (e) {
      await uploads;
      const why = this.current?.why;
      if (why === 'shutdown') {
        await unary(
          this.client.release,
          this.client,
          { attemptId: a.attemptId, reason: 'worker shutting down' },
          this.conn(),
          5_000,
        ).catch(() => undefined);
        this.log(`cell ${a.cellId}: released (shutdown)`);
      } else if (why === 'cancelled') {
        this.log(`cell ${a.cellId}: stopped (cancelled by the coordinator)`);
      } else {
        const code = isFerryError(e) ? e.code : 'FERRY_ERR_INTERNAL';
        const message = e instanceof Error ? e.message : String(e);
        this.log(`cell ${a.cellId} failed: ${code}: ${message}`);
        // The registry says whether the cell is retried (again, or only elsewhere) or fails now.
        await this.fail(a.attemptId, code, message, retryOf(code) !== 'never');
      }
    } finally {
      await ring?.close();
      rmSync(this.claimFile, { force: true });
      this.current = null;
      if (!this.stopping) this.lifecycle = 'idle';
    }
  }

  private async fail(attemptId: string, code: string, message: string, retryable: boolean): Promise<void> {
    await this.retrying(() =>
      unary(this.client.fail, this.client, { attemptId, code, message, retryable }, this.conn(), 10_000),
    ).catch(() => undefined);
  }

  /**
   * Retries a call while the coordinator is unreachable (it may be restarting), for up to two
   * minutes: a finished cell's result must not be lost to a coordinator that is down for a while.
   */
  private retrying<T>(fn: () => Promise<T>): Promise<T> {
    const until = Date.now() + 120_000;
    return withBackoff(fn, {
      policy: this.backoff,
      retry: (e) => isUnavailable(e) && Date.now() < until && !this.stopping,
    });
  }

  private upload(a: Assignment, file: string, epochsDone: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const call = this.client.uploadCheckpoint(metadataFor(this.conn()), (e, r) => {
        if (e) reject(e);
        else if (!r.ok) reject(new Error(r.message));
        else resolve();
      });
      sendChunks(call, fileChunks(file, { attemptId: a.attemptId, cellId: a.cellId, epochsDone })).catch((e: Error) => {
        call.cancel();
        reject(e);
      });
    });
  }

  /** The coordinator's checkpoint of the cell, checked (order, completeness, SHA-256), to `dest`. */
  private async download(a: Assignment, dest: string): Promise<void> {
    const sink = await ChunkSink.open(`${dest}.tmp`);
    try {
      const call = this.client.downloadCheckpoint(
        { attemptId: a.attemptId, cellId: a.cellId },
        metadataFor(this.conn()),
      );
      for await (const chunk of call as AsyncIterable<CheckpointChunk>) {
        const problem = await sink.write(chunk);
        if (problem) {
          call.cancel();
          throw new Error(`downloaded checkpoint refused: ${problem}`);
        }
      }
      const done = await sink.close();
      if ('problem' in done) throw new Error(`downloaded checkpoint refused: ${done.problem}`);
      await rename(sink.file, dest);
    } catch (e) {
      await sink.discard();
      throw e;
    }
  }
}

/** The claim a previous process of this worker left (see FerryWorker.recovered); null when none or unreadable. */
function readClaim(file: string): RunningCell | null {
  if (!existsSync(file)) return null;
  try {
    const c = JSON.parse(readFileSync(file, 'utf8')) as Partial<RunningCell>;
    if (typeof c.cellId === 'string' && typeof c.attemptId === 'string' && typeof c.epoch === 'number')
      return { cellId: c.cellId, attemptId: c.attemptId, epoch: c.epoch };
  } catch {
    // a claim cut short by the crash: nothing to resume
  }
  rmSync(file, { force: true });
  return null;
}
