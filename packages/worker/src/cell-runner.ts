import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { datasetFingerprint, isFerryError, runCell, type BackendSelection, type CellConfig } from '@ferry/core';
import { parseCellSpec, retryOf, sourceCellOf, startsFromScratch } from '@ferry/common';
import { FileKind, type Assignment, type FerryEvent } from '@ferry/protocol';
import { fetchSourceWeights, fileChunks, metadataFor, receiveFile, sendChunks, unary } from '@ferry/client';
import { AttemptProgress, type AttemptRun, type ProgressSink, type TrainOutcome } from './attempt.js';
import { PeerRing, type PeerServer } from './peer.js';
import type { CoordinatorSession } from './session.js';
import { cellConfigFromSpec } from './spec.js';
import { wireMetrics, wireResult } from './wire.js';

/** What running a cell needs of its worker. */
export interface RunnerContext {
  readonly session: CoordinatorSession;
  readonly backend: BackendSelection;
  readonly peer: PeerServer;
  /** The CA this worker's ring neighbours present certificates of (TLS on the ring link), if any. */
  readonly peerTlsCa: Buffer | undefined;
  readonly name: string;
  readonly dataRoot: string;
  readonly workDir: string;
  readonly cacheDir: string;
  readonly decodeThreads?: number;
  readonly stepEventMs?: number;
  readonly collectiveDeadlineMs?: number;
  publish(kind: 'step' | 'epoch', event: FerryEvent): void;
  log(line: string): void;
}

/** What prepare() found: ready to train, or a problem with this worker's copy of the data. */
export type Prepared =
  | { readonly ok: true; readonly config: CellConfig; readonly dir: string; readonly ring: PeerRing | undefined }
  | { readonly problem: string };

/**
 * One attempt's work, in three steps the worker sequences: prepare (the coordinator's checkpoint,
 * the dataset check, Start, the source weights, the ring), train (the engine; progress to events,
 * epoch reports and checkpoint uploads), report (result, release or failure).
 */
export class CellRunner {
  constructor(private readonly ctx: RunnerContext) {}

  private get client() {
    return this.ctx.session.client;
  }

  private get conn() {
    return this.ctx.session.connection;
  }

  /**
   * Before training: the coordinator's checkpoint (the truth: local leftovers of earlier attempts
   * go), the dataset present and the same as the sweep's copy (Start), the engine's configuration,
   * and the data-parallel ring. A problem with this worker's copy of the data is returned, not thrown.
   */
  async prepare(a: Assignment): Promise<Prepared> {
    // The coordinator's message, checked field by field against the cell specification's table.
    const spec = parseCellSpec(a.spec, `attempt ${a.attemptId} of cell ${a.cellId}`);
    const dir = path.join(this.ctx.workDir, 'cells', a.cellId);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    if (a.checkpointEpochs > 0) await this.download(a, path.join(dir, 'last.safetensors'));
    const datasetDir = path.resolve(this.ctx.dataRoot, spec.path);
    if (!existsSync(datasetDir)) return { problem: `dataset ${spec.dataset} is not on this worker (${datasetDir})` };
    const fp = await datasetFingerprint(datasetDir);
    const started = await unary(
      this.client.start,
      this.client,
      { attemptId: a.attemptId, datasetFingerprint: fp.fingerprint, fileCount: fp.files },
      this.conn,
      10_000,
    );
    if (!started.ok) return { problem: started.message };
    const source = await this.sourceWeights(a);
    const config = cellConfigFromSpec(spec, this.ctx.dataRoot, this.ctx.cacheDir, source);
    return { ok: true, config, dir, ring: a.worldSize > 1 ? this.joinRing(a) : undefined };
  }

  /** The engine runs the cell; progress becomes events, epoch reports and checkpoint uploads. */
  async train(
    a: Assignment,
    run: AttemptRun,
    p: { config: CellConfig; dir: string; ring: PeerRing | undefined },
  ): Promise<TrainOutcome> {
    const progress = new AttemptProgress(this.progressSink(a), a, run);
    try {
      const result = await runCell(p.config, {
        ...(p.ring ? { distributed: { transport: p.ring, deadlineMs: this.ctx.collectiveDeadlineMs ?? 60_000 } } : {}),
        outDir: p.dir,
        cacheDir: path.join(this.ctx.cacheDir, 'features'),
        backend: this.ctx.backend,
        signal: run.abort.signal,
        ...(this.ctx.decodeThreads ? { decodeThreads: this.ctx.decodeThreads } : {}),
        onWarning: (m) => this.ctx.log(`warning: ${m}`),
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
  async report(a: Assignment, run: AttemptRun, outcome: TrainOutcome): Promise<void> {
    const log = (line: string) => this.ctx.log(line);
    if (outcome.ok) {
      if (a.rank !== 0) return log(`cell ${a.cellId}: rank ${a.rank} done`);
      await this.keepBest(a, outcome.dir);
      const ack = await this.ctx.session.retrying(() =>
        unary(
          this.client.complete,
          this.client,
          { attemptId: a.attemptId, result: wireResult(outcome.result) },
          this.conn,
          30_000,
        ),
      );
      return log(
        `cell ${a.cellId}: best val ${(outcome.result.bestValAccuracy * 100).toFixed(1)}%${ack.ok ? '' : ` (not recorded: ${ack.message})`}`,
      );
    }
    if (run.why === 'shutdown') {
      const release = { attemptId: a.attemptId, reason: 'worker shutting down' };
      await unary(this.client.release, this.client, release, this.conn, 5_000).catch(() => undefined);
      return log(`cell ${a.cellId}: released (shutdown)`);
    }
    if (run.why === 'cancelled') return log(`cell ${a.cellId}: stopped (cancelled by the coordinator)`);
    const e = outcome.error;
    const code = isFerryError(e) ? e.code : 'FERRY_ERR_INTERNAL';
    const message = e instanceof Error ? e.message : String(e);
    log(`cell ${a.cellId} failed: ${code}: ${message}`);
    // The registry says whether the cell is retried (again, or only elsewhere) or fails now.
    await this.fail(a.attemptId, code, message, retryOf(code) !== 'never');
  }

  /** Reports a failed attempt (retried while the coordinator is away; given up quietly after). */
  async fail(attemptId: string, code: string, message: string, retryable: boolean): Promise<void> {
    await this.ctx.session
      .retrying(() => unary(this.client.fail, this.client, { attemptId, code, message, retryable }, this.conn, 10_000))
      .catch(() => undefined);
  }

  /** A cell of a later stage: its source cell's best weights, from the coordinator or this worker's cache. */
  private async sourceWeights(a: Assignment): Promise<string | undefined> {
    const source = sourceCellOf(a.spec!.weights);
    if (source === null || startsFromScratch(a.spec!.strategy)) return undefined;
    const got = await fetchSourceWeights(this.conn, this.ctx.cacheDir, source, a.sourceWeightsSha256);
    this.ctx.log(
      `cell ${a.cellId}: starting from the best weights of cell ${source} (${got.fetched ? 'fetched from the coordinator' : 'cached'}, ${got.bytes} bytes)`,
    );
    return got.file;
  }

  private joinRing(a: Assignment): PeerRing {
    const next = (a.rank + 1) % a.worldSize;
    const right = a.peerAddresses[next];
    if (!right) throw new Error(`rank ${a.rank}: no peer address for rank ${next}`);
    this.ctx.log(`cell ${a.cellId}: rank ${a.rank} of ${a.worldSize} (generation ${a.generation})`);
    return new PeerRing(
      a.rank,
      a.worldSize,
      `${a.cellId}/${a.generation}`,
      right,
      this.ctx.peer,
      a.groupSecret,
      this.ctx.peerTlsCa,
    );
  }

  /**
   * The best-val weights go to the coordinator before the result (an upload needs the lease), so
   * a done cell has its artifact; a failed upload is said and costs the artifact, not the result.
   */
  private async keepBest(a: Assignment, dir: string): Promise<void> {
    const file = path.join(dir, 'best.safetensors');
    if (!existsSync(file)) return this.ctx.log(`cell ${a.cellId}: no best weights to keep`);
    await this.ctx.session
      .retrying(() => this.upload(a, file, 0, FileKind.FILE_KIND_BEST))
      .catch((e: Error) => this.ctx.log(`cell ${a.cellId}: best weights not kept by the coordinator: ${e.message}`));
  }

  /** What an attempt's progress needs of this worker. */
  private progressSink(a: Assignment): ProgressSink {
    return {
      name: this.ctx.name,
      stepEventMs: this.ctx.stepEventMs ?? 500,
      publish: (kind, event) => this.ctx.publish(kind, event),
      reportEpoch: (metrics) => {
        const req = { attemptId: a.attemptId, epoch: metrics.epoch, metrics: wireMetrics(metrics) };
        void unary(this.client.reportEpoch, this.client, req, this.conn, 10_000).catch(() => undefined);
      },
      upload: (file, epochsDone) =>
        this.upload(a, file, epochsDone).catch((e: Error) => this.ctx.log(`checkpoint upload failed: ${e.message}`)),
      log: (line) => this.ctx.log(line),
    };
  }

  private upload(
    a: Assignment,
    file: string,
    epochsDone: number,
    kind: FileKind = FileKind.FILE_KIND_CHECKPOINT,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const call = this.client.uploadCheckpoint(metadataFor(this.conn), (e, r) => {
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
    const call = this.client.downloadCheckpoint({ attemptId: a.attemptId, cellId: a.cellId }, metadataFor(this.conn));
    await receiveFile(call, dest, 'downloaded checkpoint');
  }
}
