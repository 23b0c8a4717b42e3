import { randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { selectBackend, type BackendOptions, type BackendRequest, type BackendSelection } from '@ferry/core';
import type { Assignment, RunningCell } from '@ferry/protocol';
import { EventPublisher, type NatsTarget } from '@ferry/events';
import { FerryEvent, SUBJECTS } from '@ferry/protocol';
import type { ConnectionOptions } from '@ferry/client';
import type { AttemptRun } from './attempt.js';
import { CellRunner } from './cell-runner.js';
import { ClaimFile } from './claim.js';
import { PeerServer, type PeerRing, type PeerTls } from './peer.js';
import { CoordinatorSession, backoffOf } from './session.js';

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

/** What create() reads before the worker starts (its constructor does no I/O). */
interface WorkerFiles {
  readonly workerId: string;
  readonly claim: ClaimFile;
  readonly recovered: RunningCell | null;
  readonly peerTls: PeerTls | undefined;
}

/**
 * One worker process (one GPU): the coordinator session (session.ts), the cell runner
 * (cell-runner.ts), the ring link's server (peer.ts) and the crash-recovery claim (claim.ts),
 * sequenced here: poll, run the attempt (prepare, train, report), repeat until shutdown().
 */
export class FerryWorker {
  private state: WorkerState = { kind: 'created' };
  private readonly session: CoordinatorSession;
  private readonly runner: CellRunner;
  private readonly events: EventPublisher | null;
  private readonly peer: PeerServer;
  private readonly claim: ClaimFile;
  /** Attempts already run here: a re-delivered assignment of one of them is not run twice. */
  private readonly ranAttempts = new Set<string>();
  /**
   * The attempt this worker's previous process was running when it died (its claim file): claimed
   * at registration so that the coordinator keeps the lease, then resumed from the last checkpoint
   * when the coordinator delivers it again.
   */
  private recovered: RunningCell | null;
  readonly workerId: string;
  readonly name: string;

  private constructor(
    readonly options: WorkerOptions,
    readonly backend: BackendSelection,
    files: WorkerFiles,
  ) {
    this.workerId = files.workerId;
    this.recovered = files.recovered;
    this.claim = files.claim;
    this.name = options.name ?? `${os.hostname()}-${options.gpuIndex ?? process.pid}`;
    const peerHost = options.peerHost ?? '127.0.0.1';
    this.peer = new PeerServer({
      host: peerHost,
      port: options.peerPort ?? 0,
      advertiseHost: options.peerAdvertise ?? (peerHost === '0.0.0.0' ? os.hostname() : peerHost),
      ...(files.peerTls ? { tls: files.peerTls } : {}),
      ...(options.peerInsecure ? { insecure: true } : {}),
    });
    this.events = options.nats
      ? new EventPublisher({
          target: { ...options.nats, name: options.nats.name ?? `ferry-worker-${this.name}` },
          log: (l) => this.log(l),
        })
      : null;
    this.session = new CoordinatorSession(
      {
        connection: options.connection,
        workerId: this.workerId,
        name: this.name,
        backend: backend.name,
        device: backend.device,
        ...(options.gpuIndex !== undefined ? { gpuIndex: options.gpuIndex } : {}),
        ...(options.slurmJob ? { slurmJob: options.slurmJob } : {}),
        heartbeatFile: path.join(options.workDir, 'heartbeat'),
        backoff: backoffOf(options),
        ...(options.giveUpAfterMs !== undefined ? { giveUpAfterMs: options.giveUpAfterMs } : {}),
        ...(options.pollWaitMs !== undefined ? { pollWaitMs: options.pollWaitMs } : {}),
      },
      {
        running: () => this.running(),
        imagesPerSec: () => this.current?.imagesPerSec ?? 0,
        drop: (ids, why) => this.drop(ids, why),
        registered: () => {
          if (this.state.kind === 'created') this.state = { kind: 'idle' };
        },
        tick: () => this.emitWorker('alive', this.current),
        stopping: () => this.stopping,
        log: (l) => this.log(l),
      },
    );
    this.runner = new CellRunner({
      session: this.session,
      backend,
      peer: this.peer,
      peerTlsCa: files.peerTls?.ca,
      name: this.name,
      dataRoot: options.dataRoot,
      workDir: options.workDir,
      cacheDir: options.cacheDir,
      ...(options.decodeThreads ? { decodeThreads: options.decodeThreads } : {}),
      ...(options.stepEventMs !== undefined ? { stepEventMs: options.stepEventMs } : {}),
      ...(options.collectiveDeadlineMs !== undefined ? { collectiveDeadlineMs: options.collectiveDeadlineMs } : {}),
      publish: (kind, event) => this.emit(kind, event),
      log: (l) => this.log(l),
    });
  }

  /**
   * The backend, the worker's stable id (`<workDir>/worker-id`), a claim a previous process left,
   * and the TLS material of the ring link; then the worker, which run() starts.
   */
  static async create(options: WorkerOptions): Promise<FerryWorker> {
    const backend = await selectBackend(options.backend ?? 'auto', options.backendOptions);
    await mkdir(options.workDir, { recursive: true });
    const idFile = path.join(options.workDir, 'worker-id');
    // A first start has no id yet; any other failure to read it is the worker's to report.
    const saved = await readFile(idFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw e;
    });
    const workerId = saved.trim() || randomUUID();
    await writeFile(idFile, `${workerId}\n`);
    const claim = new ClaimFile(path.join(options.workDir, 'attempt.json'));
    const peerTls = await peerTlsOf(options.connection);
    return new FerryWorker(options, backend, { workerId, claim, recovered: claim.read(), peerTls });
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

  private running(): RunningCell[] {
    if (this.current)
      return [{ cellId: this.current.cellId, attemptId: this.current.attemptId, epoch: this.current.epoch }];
    return this.recovered ? [this.recovered] : [];
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

  /** The coordinator let attempts go: the one running stops; a claim it moved on is dropped. */
  private drop(ids: readonly string[], why: 'moved on' | 'cancelled'): void {
    const cur = this.current;
    if (cur && ids.includes(cur.attemptId)) {
      if (why === 'cancelled') this.log(`coordinator cancelled attempt ${cur.attemptId}`);
      this.abortCurrent('cancelled');
    }
    if (why === 'moved on' && this.recovered && ids.includes(this.recovered.attemptId))
      this.dropClaim('the coordinator moved it on');
  }

  private dropClaim(why: string): void {
    if (!this.recovered) return;
    this.log(
      `not resuming attempt ${this.recovered.attemptId} of cell ${this.recovered.cellId} after a restart: ${why}`,
    );
    this.recovered = null;
    this.claim.clear();
  }

  private abortCurrent(why: 'shutdown' | 'cancelled'): void {
    if (!this.current) return;
    this.current.why = why;
    this.current.abort.abort(new Error(why));
  }

  /** Runs until shutdown(): register, poll, train, repeat. */
  async run(): Promise<void> {
    this.session.start(await this.peer.start());
    while (!this.stopping) {
      const a = await this.session.next();
      if (this.stopping) break;
      if (!a) continue;
      if (this.recovered) {
        // The coordinator delivers a kept attempt again (with its latest checkpoint); anything else means it is gone.
        if (a.hasAssignment && a.attemptId === this.recovered.attemptId)
          this.log(`resuming attempt ${a.attemptId} of cell ${a.cellId} after a restart`);
        else this.dropClaim('the coordinator did not deliver it again');
        this.recovered = null;
      }
      if (!a.hasAssignment) continue;
      if (this.ranAttempts.has(a.attemptId)) {
        // A group member that finished before rank 0 reported: wait for the attempt to close.
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      this.ranAttempts.add(a.attemptId);
      await this.runAssignment(a);
    }
    await this.session.close();
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
    this.session.interrupt();
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
    this.session.pushState();
    if (a.worldSize <= 1) this.claim.write(this.running()[0]!);
    const s = a.spec!;
    this.log(
      `cell ${a.cellId} (${s.dataset} ${s.color} ${s.strategy} ${s.model} seed ${s.seed}): attempt ${a.attemptId}${a.checkpointEpochs ? `, resuming after epoch ${a.checkpointEpochs}` : ''}`,
    );
    let ring: PeerRing | undefined;
    try {
      const prepared = await this.runner.prepare(a).catch((error: unknown) => ({ ok: false as const, error }));
      if ('problem' in prepared) {
        this.step('releasing', run);
        await this.runner.fail(a.attemptId, 'FERRY_ERR_DATASET_MISMATCH', prepared.problem, true);
        return;
      }
      ring = prepared.ok ? prepared.ring : undefined;
      this.step('training', run);
      const outcome = prepared.ok ? await this.runner.train(a, run, prepared) : prepared;
      this.step('releasing', run);
      await this.runner.report(a, run, outcome);
    } finally {
      await ring?.close();
      this.claim.clear();
      this.state = this.stopping ? { kind: 'stopping', attempt: null } : { kind: 'idle' };
      this.session.pushState();
    }
  }
}

/**
 * The ring link's TLS: the worker's own certificate and key (those it presents to the
 * coordinator), and the CA its neighbours' certificates are checked against; none without a
 * certificate.
 */
async function peerTlsOf(conn: ConnectionOptions): Promise<PeerTls | undefined> {
  const tls = conn.tls;
  if (!tls?.cert || !tls.key) return undefined;
  const [cert, key, ca] = await Promise.all([
    readFile(tls.cert),
    readFile(tls.key),
    tls.ca ? readFile(tls.ca) : Promise.resolve(undefined),
  ]);
  return { cert, key, ...(ca ? { ca } : {}) };
}
