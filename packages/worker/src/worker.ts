import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
  type CellConfig,
  type CellResult,
  type EpochMetrics as EngineMetrics,
  type CellRunOptions,
} from '@ferry/core';
import { FERRY_VERSION, FerryError, retryOf, sourceCellOf, startsFromScratch } from '@ferry/common';
import type { Assignment, CoordinatorClient, RunningCell } from '@ferry/protocol';
import { EventPublisher, type NatsTarget } from '@ferry/events';
import { FerryEvent, FileKind, SUBJECTS } from '@ferry/protocol';
import {
  DEFAULT_BACKOFF,
  coordinatorClient,
  fetchSourceWeights,
  fileChunks,
  isUnavailable,
  metadataFor,
  receiveFile,
  sendChunks,
  unary,
  withBackoff,
  type BackoffPolicy,
  type ConnectionOptions,
} from '@ferry/client';
import { HeartbeatThread, type HeartbeatReply } from './heartbeat.js';
import { PeerRing, PeerServer } from './peer.js';
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
  /** The Slurm job this worker runs as ("123_4"), shown in its worker record. */
  readonly slurmJob?: string;
  /**
   * Stop (run() rejects with FERRY_ERR_UNAVAILABLE) when the coordinator has not answered a
   * registration for this long: a batch job whose `ferry run` is gone frees its allocation instead
   * of waiting for its time limit. Default: retry for ever (a restarting coordinator comes back).
   */
  readonly giveUpAfterMs?: number;
  readonly log?: (line: string) => void;
  /** Reconnect backoff bounds. */
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  /** Publish step, epoch and heartbeat events to NATS. Training never waits on it. */
  readonly nats?: NatsTarget;
  /** Least time between two step events of a cell. */
  readonly stepEventMs?: number;
  /** Host the ring link (data-parallel groups) listens on. Default 127.0.0.1. */
  readonly peerHost?: string;
  /** Its port (default: a free one). */
  readonly peerPort?: number;
  /** The host other workers reach it by (pod IP, service name); default: peerHost, or the hostname for 0.0.0.0. */
  readonly peerAdvertise?: string;
  /**
   * Bind the ring link off loopback without TLS. Without it, a non-loopback peerHost needs the
   * connection's TLS certificate and key (the Peer link uses them, neighbours verify with its CA).
   */
  readonly peerInsecure?: boolean;
  /** Deadline of each collective (a lost rank aborts the group within it). Default 60 s. */
  readonly collectiveDeadlineMs?: number;
}

/** An attempt this worker holds: its cell, its progress, and how to stop it. */
interface AttemptRun {
  readonly cellId: string;
  readonly sweepId: string;
  readonly attemptId: string;
  /** Epochs done (the coordinator's checkpoint, then each epoch trained here). */
  epoch: number;
  imagesPerSec: number;
  readonly abort: AbortController;
  /** Why it was aborted, if it was. */
  why: 'shutdown' | 'cancelled' | null;
}

/**
 * What the worker is doing. An attempt moves preparing (checkpoint, dataset check, Start) ->
 * training -> releasing (result, failure or release reported); `stopping` is a shutdown that waits
 * for the attempt it holds, if any. The coordinator session is separate: it can drop and come
 * back in any state.
 */
export type WorkerState =
  | { readonly kind: 'created' }
  | { readonly kind: 'idle' }
  | { readonly kind: 'preparing'; readonly attempt: AttemptRun }
  | { readonly kind: 'training'; readonly attempt: AttemptRun }
  | { readonly kind: 'releasing'; readonly attempt: AttemptRun }
  | { readonly kind: 'stopping'; readonly attempt: AttemptRun | null }
  | { readonly kind: 'stopped' };

export type WorkerLifecycle = WorkerState['kind'];

/** What the engine reports while it runs a cell. */
type CellProgress = Parameters<NonNullable<CellRunOptions['onProgress']>>[0];

/** How the engine's run of an attempt ended. */
type TrainOutcome =
  | { readonly ok: true; readonly result: CellResult; readonly dir: string }
  | { readonly ok: false; readonly error: unknown };

/**
 * One worker process (one GPU): registers, heartbeats, long-polls for cells, runs each with the
 * engine, reports epochs, uploads a checkpoint every epoch, and resumes from the coordinator's
 * checkpoint when a cell had started elsewhere.
 */
export class FerryWorker {
  private state: WorkerState = { kind: 'created' };
  private readonly client: CoordinatorClient;
  private session: { id: string; heartbeatMs: number } | null = null;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeats: HeartbeatThread | null = null;
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
    return this.state.kind;
  }

  /** The attempt held now, in whatever step. */
  private get current(): AttemptRun | null {
    return 'attempt' in this.state ? this.state.attempt : null;
  }

  private get stopping(): boolean {
    return this.state.kind === 'stopping' || this.state.kind === 'stopped';
  }

  /** The next step of the attempt held (a shutdown keeps it in `stopping`). */
  private step(kind: 'preparing' | 'training' | 'releasing', attempt: AttemptRun): void {
    if (!this.stopping) this.state = { kind, attempt };
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
    const since = Date.now();
    const giveUp = this.options.giveUpAfterMs;
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
              ferryVersion: FERRY_VERSION,
              host: os.hostname(),
              gpuIndex: this.options.gpuIndex ?? -1,
              peerAddress: this.peerAddress,
              slurmJob: this.options.slurmJob ?? '',
            },
            running: this.running(),
          },
          this.conn(),
          10_000,
        ),
      {
        policy: this.backoff,
        retry: () => !this.stopping && (giveUp === undefined || Date.now() - since < giveUp),
        onRetry: (e, delay) =>
          this.log(
            `cannot reach the coordinator at ${this.conn().address} (${(e as grpc.ServiceError).details ?? (e as Error).message}); retrying in ${delay} ms`,
          ),
      },
    ).catch((e: unknown) => {
      if (this.stopping) return null;
      if (giveUp !== undefined && Date.now() - since >= giveUp)
        throw new FerryError(
          'FERRY_ERR_UNAVAILABLE',
          `the coordinator at ${this.conn().address} has not answered for ${Math.round((Date.now() - since) / 1000)} s (--give-up-after-ms ${giveUp}): stopping (${(e as grpc.ServiceError).details ?? (e as Error).message})`,
        );
      throw e;
    });
    if (!r) return;
    this.session = { id: r.sessionId, heartbeatMs: r.heartbeatIntervalMs };
    if (this.current && r.abandonAttempts.includes(this.current.attemptId)) this.abortCurrent('cancelled');
    if (this.recovered && r.abandonAttempts.includes(this.recovered.attemptId))
      this.dropClaim('the coordinator moved it on');
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => this.heartbeat(), r.heartbeatIntervalMs);
    this.pushHeartbeatState();
    if (this.state.kind === 'created') this.state = { kind: 'idle' };
    this.log(`registered with ${this.conn().address} (backend ${this.backend.name})`);
  }

  private get backoff(): BackoffPolicy {
    return {
      minMs: this.options.reconnectMinMs ?? DEFAULT_BACKOFF.minMs,
      maxMs: this.options.reconnectMaxMs ?? DEFAULT_BACKOFF.maxMs,
    };
  }

  /**
   * Every heartbeat interval on the main thread: the worker's NATS event, and the latest state for
   * the heartbeat thread, which keeps the lease (see HeartbeatThread) even while a step holds this
   * thread.
   */
  private heartbeat(): void {
    const cur = this.current;
    this.emitWorker('alive', cur);
    this.pushHeartbeatState();
  }

  /** This worker's state as a NATS event (on its cell's sweep while it runs one). */
  private emitWorker(state: 'alive' | 'stopped', cur: AttemptRun | null): void {
    const worker = {
      workerId: this.workerId,
      name: this.name,
      backend: this.backend.name,
      device: this.backend.device,
      state,
      imagesPerSec: cur?.imagesPerSec ?? 0,
      cellId: cur?.cellId ?? '',
    };
    const sweepId = cur?.sweepId ?? SUBJECTS.CLUSTER;
    this.emit('worker', FerryEvent.fromPartial({ sweepId, time: new Date().toISOString(), worker }));
  }

  private pushHeartbeatState(): void {
    this.heartbeats?.update({
      sessionId: this.session?.id ?? null,
      intervalMs: this.session?.heartbeatMs ?? 1_000,
      running: this.running(),
      imagesPerSec: this.current?.imagesPerSec ?? 0,
    });
  }

  /** The coordinator's answer to a heartbeat of the current session: stop attempts, register again. */
  private heard(r: HeartbeatReply): void {
    if (r.sessionId !== this.session?.id) return;
    if (r.type === 'reply') {
      if (this.current && r.cancelAttempts.includes(this.current.attemptId)) {
        this.log(`coordinator cancelled attempt ${this.current.attemptId}`);
        this.abortCurrent('cancelled');
      }
      if (r.reregister) this.session = null;
    } else {
      // The coordinator may be restarting: register again (with backoff) right away, even while
      // training, so that a restarted coordinator sees this worker claim its cell within a lease.
      this.session = null;
    }
    if (!this.session) {
      this.pushHeartbeatState();
      this.wake?.();
      // A registration that gives up (giveUpAfterMs) surfaces in the poll loop, which awaits it too.
      this.ensureSession().catch(() => undefined);
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
    this.heartbeats = new HeartbeatThread(
      {
        connection: this.conn(),
        workerId: this.workerId,
        heartbeatFile: path.join(this.options.workDir, 'heartbeat'),
      },
      (r) => this.heard(r),
    );
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
    await this.heartbeats.stop();
    this.client.close();
    await this.peer.stop();
    this.emitWorker('stopped', null);
    await this.events?.close();
    this.state = { kind: 'stopped' };
  }

  /** SIGTERM: stop the running cell (its last epoch checkpoint is on the coordinator), release its lease. */
  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.state = { kind: 'stopping', attempt: this.current };
    this.abortCurrent('shutdown');
    this.wake?.();
  }

  /** One attempt: prepare -> train -> report, each its own step; the claim and ring are let go at the end. */
  private async runAssignment(a: Assignment): Promise<void> {
    const run: AttemptRun = {
      cellId: a.cellId,
      sweepId: a.sweepId,
      attemptId: a.attemptId,
      epoch: a.checkpointEpochs,
      imagesPerSec: 0,
      abort: new AbortController(),
      why: null,
    };
    this.state = this.stopping ? { kind: 'stopping', attempt: run } : { kind: 'preparing', attempt: run };
    this.pushHeartbeatState();
    if (a.worldSize <= 1) writeFileSync(this.claimFile, `${JSON.stringify(this.running()[0])}\n`);
    const s = a.spec!;
    this.log(
      `cell ${a.cellId} (${s.dataset} ${s.color} ${s.strategy} ${s.model} seed ${s.seed}): attempt ${a.attemptId}${a.checkpointEpochs ? `, resuming after epoch ${a.checkpointEpochs}` : ''}`,
    );
    let ring: PeerRing | undefined;
    try {
      const prepared = await this.prepare(a).catch((error: unknown) => ({ ok: false as const, error }));
      if ('problem' in prepared) {
        this.step('releasing', run);
        await this.fail(a.attemptId, 'FERRY_ERR_DATASET_MISMATCH', prepared.problem, true);
        return;
      }
      ring = prepared.ok ? prepared.ring : undefined;
      this.step('training', run);
      const outcome = prepared.ok ? await this.train(a, run, prepared) : prepared;
      this.step('releasing', run);
      await this.report(a, run, outcome);
    } finally {
      await ring?.close();
      rmSync(this.claimFile, { force: true });
      this.state = this.stopping ? { kind: 'stopping', attempt: null } : { kind: 'idle' };
      this.pushHeartbeatState();
    }
  }

  /**
   * Before training: the coordinator's checkpoint (the truth: local leftovers of earlier attempts
   * go), the dataset present and the same as the sweep's copy (Start), the engine's configuration,
   * and the data-parallel ring. A problem with this worker's copy of the data is returned, not thrown.
   */
  private async prepare(
    a: Assignment,
  ): Promise<{ ok: true; config: CellConfig; dir: string; ring: PeerRing | undefined } | { problem: string }> {
    const spec = a.spec!;
    const dir = path.join(this.options.workDir, 'cells', a.cellId);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    if (a.checkpointEpochs > 0) await this.download(a, path.join(dir, 'last.safetensors'));
    const datasetDir = path.resolve(this.options.dataRoot, spec.path);
    if (!existsSync(datasetDir)) return { problem: `dataset ${spec.dataset} is not on this worker (${datasetDir})` };
    const fp = await datasetFingerprint(datasetDir);
    const started = await unary(
      this.client.start,
      this.client,
      { attemptId: a.attemptId, datasetFingerprint: fp.fingerprint, fileCount: fp.files },
      this.conn(),
      10_000,
    );
    if (!started.ok) return { problem: started.message };
    const source = await this.sourceWeights(a);
    const config = cellConfigFromSpec(spec, this.options.dataRoot, this.options.cacheDir, source);
    return { ok: true, config, dir, ring: a.worldSize > 1 ? this.joinRing(a) : undefined };
  }

  /** A cell of a later stage: its source cell's best weights, from the coordinator or this worker's cache. */
  private async sourceWeights(a: Assignment): Promise<string | undefined> {
    const source = sourceCellOf(a.spec!.weights);
    if (source === null || startsFromScratch(a.spec!.strategy)) return undefined;
    const got = await fetchSourceWeights(this.conn(), this.options.cacheDir, source, a.sourceWeightsSha256);
    this.log(
      `cell ${a.cellId}: starting from the best weights of cell ${source} (${got.fetched ? 'fetched from the coordinator' : 'cached'}, ${got.bytes} bytes)`,
    );
    return got.file;
  }

  private joinRing(a: Assignment): PeerRing {
    const next = (a.rank + 1) % a.worldSize;
    const right = a.peerAddresses[next];
    if (!right) throw new Error(`rank ${a.rank}: no peer address for rank ${next}`);
    this.log(`cell ${a.cellId}: rank ${a.rank} of ${a.worldSize} (generation ${a.generation})`);
    return new PeerRing(
      a.rank,
      a.worldSize,
      `${a.cellId}/${a.generation}`,
      right,
      this.peer,
      a.groupSecret,
      this.peerTlsCa,
    );
  }

  /** The engine runs the cell; progress becomes events, epoch reports and checkpoint uploads. */
  private async train(
    a: Assignment,
    run: AttemptRun,
    p: { config: CellConfig; dir: string; ring: PeerRing | undefined },
  ): Promise<TrainOutcome> {
    const progress = new AttemptProgress(this.progressSink(a), a, run);
    try {
      const result = await runCell(p.config, {
        ...(p.ring
          ? { distributed: { transport: p.ring, deadlineMs: this.options.collectiveDeadlineMs ?? 60_000 } }
          : {}),
        outDir: p.dir,
        cacheDir: path.join(this.options.cacheDir, 'features'),
        backend: this.backend,
        signal: run.abort.signal,
        ...(this.options.decodeThreads ? { decodeThreads: this.options.decodeThreads } : {}),
        onWarning: (m) => this.log(`warning: ${m}`),
        onProgress: (x) => progress.on(x),
      });
      await progress.uploads;
      return { ok: true, result, dir: p.dir };
    } catch (error) {
      await progress.uploads;
      return { ok: false, error };
    }
  }

  /**
   * After training: rank 0 reports the result (retried while the coordinator is away); a stopped
   * attempt is released (shutdown) or let go (cancelled); a failure is reported with the registry's
   * verdict on retrying it.
   */
  private async report(a: Assignment, run: AttemptRun, outcome: TrainOutcome): Promise<void> {
    if (outcome.ok) {
      if (a.rank !== 0) return this.log(`cell ${a.cellId}: rank ${a.rank} done`);
      await this.keepBest(a, outcome.dir);
      const ack = await this.retrying(() =>
        unary(
          this.client.complete,
          this.client,
          { attemptId: a.attemptId, result: wireResult(outcome.result) },
          this.conn(),
          30_000,
        ),
      );
      return this.log(
        `cell ${a.cellId}: best val ${(outcome.result.bestValAccuracy * 100).toFixed(1)}%${ack.ok ? '' : ` (not recorded: ${ack.message})`}`,
      );
    }
    if (run.why === 'shutdown') {
      const release = { attemptId: a.attemptId, reason: 'worker shutting down' };
      await unary(this.client.release, this.client, release, this.conn(), 5_000).catch(() => undefined);
      return this.log(`cell ${a.cellId}: released (shutdown)`);
    }
    if (run.why === 'cancelled') return this.log(`cell ${a.cellId}: stopped (cancelled by the coordinator)`);
    const e = outcome.error;
    const code = isFerryError(e) ? e.code : 'FERRY_ERR_INTERNAL';
    const message = e instanceof Error ? e.message : String(e);
    this.log(`cell ${a.cellId} failed: ${code}: ${message}`);
    // The registry says whether the cell is retried (again, or only elsewhere) or fails now.
    await this.fail(a.attemptId, code, message, retryOf(code) !== 'never');
  }

  /**
   * The best-val weights go to the coordinator before the result (an upload needs the lease), so
   * a done cell has its artifact; a failed upload is said and costs the artifact, not the result.
   */
  private async keepBest(a: Assignment, dir: string): Promise<void> {
    const file = path.join(dir, 'best.safetensors');
    if (!existsSync(file)) return this.log(`cell ${a.cellId}: no best weights to keep`);
    await this.retrying(() => this.upload(a, file, 0, FileKind.FILE_KIND_BEST)).catch((e: Error) =>
      this.log(`cell ${a.cellId}: best weights not kept by the coordinator: ${e.message}`),
    );
  }

  /** What an attempt's progress needs of this worker. */
  private progressSink(a: Assignment): ProgressSink {
    return {
      name: this.name,
      stepEventMs: this.options.stepEventMs ?? 500,
      publish: (kind, event) => this.emit(kind, event),
      reportEpoch: (metrics) => {
        const req = { attemptId: a.attemptId, epoch: metrics.epoch, metrics: wireMetrics(metrics) };
        void unary(this.client.reportEpoch, this.client, req, this.conn(), 10_000).catch(() => undefined);
      },
      upload: (file, epochsDone) =>
        this.upload(a, file, epochsDone).catch((e: Error) => this.log(`checkpoint upload failed: ${e.message}`)),
      log: (line) => this.log(line),
    };
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

  private upload(
    a: Assignment,
    file: string,
    epochsDone: number,
    kind: FileKind = FileKind.FILE_KIND_CHECKPOINT,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const call = this.client.uploadCheckpoint(metadataFor(this.conn()), (e, r) => {
        if (e) reject(e);
        else if (!r.ok) reject(new Error(r.message));
        else resolve();
      });
      sendChunks(call, fileChunks(file, { attemptId: a.attemptId, cellId: a.cellId, epochsDone, kind })).catch(
        (e: Error) => {
          call.cancel();
          reject(e);
        },
      );
    });
  }

  /** The coordinator's checkpoint of the cell, checked (order, completeness, SHA-256), to `dest`. */
  private async download(a: Assignment, dest: string): Promise<void> {
    const call = this.client.downloadCheckpoint({ attemptId: a.attemptId, cellId: a.cellId }, metadataFor(this.conn()));
    await receiveFile(call, dest, 'downloaded checkpoint');
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

/**
 * An attempt's training progress as the worker passes it on: step events (throttled), epoch
 * events and reports, checkpoint uploads one after another. Only rank 0 speaks for a
 * data-parallel group; every rank keeps its epoch count for heartbeats.
 */
interface ProgressSink {
  readonly name: string;
  readonly stepEventMs: number;
  publish(kind: 'step' | 'epoch', event: FerryEvent): void;
  reportEpoch(metrics: EngineMetrics): void;
  upload(file: string, epochsDone: number): Promise<void>;
  log(line: string): void;
}

class AttemptProgress {
  uploads: Promise<void> = Promise.resolve();
  private lastStepEvent = 0;

  constructor(
    private readonly worker: ProgressSink,
    private readonly a: Assignment,
    private readonly run: AttemptRun,
  ) {}

  on(p: CellProgress): void {
    if (p.type === 'epoch') this.run.epoch = p.metrics.epoch + 1;
    if (p.type === 'epoch' && p.allReduce && p.allReduce.steps > 0) {
      // Every rank says where its steps' time went: the all-reduce's share is what data parallelism costs.
      const { steps, computeMs, allReduceMs, bytes } = p.allReduce;
      const share = (100 * allReduceMs) / (computeMs + allReduceMs);
      this.worker.log(
        `cell ${this.a.cellId} epoch ${p.metrics.epoch} (rank ${this.a.rank} of ${this.a.worldSize}): ${steps} steps, compute ${(computeMs / steps).toFixed(0)} ms and gradient all-reduce ${(allReduceMs / steps).toFixed(0)} ms a step (${share.toFixed(0)}% of the step, ${(bytes / 1e6).toFixed(1)} MB)`,
      );
    }
    if (this.a.rank !== 0) return;
    if (p.type === 'step') this.step(p);
    else if (p.type === 'epoch') {
      const epoch = { ...wireMetrics(p.metrics), cellId: this.a.cellId, worker: this.worker.name, best: p.best };
      this.worker.publish('epoch', FerryEvent.fromPartial({ sweepId: this.a.sweepId, time: now(), epoch }));
      this.worker.reportEpoch(p.metrics);
    } else if (p.type === 'checkpoint') {
      const epochsDone = p.epoch + 1;
      this.uploads = this.uploads.then(() => this.worker.upload(p.file, epochsDone));
    }
  }

  private step(p: Extract<CellProgress, { type: 'step' }>): void {
    this.run.imagesPerSec = p.imagesPerSec;
    const t = Date.now();
    if (t - this.lastStepEvent < this.worker.stepEventMs && p.step !== p.stepsPerEpoch) return;
    this.lastStepEvent = t;
    const { epoch, step, stepsPerEpoch, loss, imagesPerSec, etaMs } = p;
    const event = { cellId: this.a.cellId, worker: this.worker.name, epoch, step, stepsPerEpoch, loss };
    this.worker.publish(
      'step',
      FerryEvent.fromPartial({
        sweepId: this.a.sweepId,
        time: now(),
        step: { ...event, imagesPerSec, etaMs, epochs: this.a.spec!.epochs },
      }),
    );
  }
}

const now = (): string => new Date().toISOString();
