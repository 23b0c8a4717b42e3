import { CHECKPOINT_FORMAT, grpcStatusOf } from '@ferry/common';
import { createHash } from 'node:crypto';
import { ChunkSink, fileChunks, sendChunks } from '@ferry/client';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  FileKind,
  type Ack,
  type ArtifactRequest,
  type CheckpointChunk,
  type CheckpointRequest,
} from '@ferry/protocol';
import { checkpointProblem } from './checkpoint-file.js';
import { status } from './rpc.js';
import type { CellEntry } from './scheduler-types.js';

/** What the checkpoint handlers need of the coordinator. */
export interface CheckpointHost {
  /** Whether a cell is done (its artifact may be downloaded). */
  isDone(cellId: string): boolean;
  readonly stateDir: string;
  readonly maxCheckpointBytes: number;
  readonly checkpointIdleMs: number;
  /** The running cell an attempt holds the lease of. */
  cellByAttempt(attemptId: string): CellEntry | undefined;
  /** A checkpoint of `epochsDone` epochs is stored for the attempt's cell. */
  stored(attemptId: string, epochsDone: number): void;
}

/**
 * The coordinator's checkpoints: one file per cell (`checkpoints/<cell>/last.safetensors`), the
 * latest epoch a worker uploaded, sent to the worker that resumes the cell. The chunk format, its
 * sender and its checks are @ferry/client's (the worker uses the same two ends).
 */
export class Checkpoints {
  constructor(private readonly host: CheckpointHost) {}

  file(cellId: string, kind: FileKind = FileKind.FILE_KIND_CHECKPOINT): string | undefined {
    const f = path.join(this.host.stateDir, 'checkpoints', cellId, FILE_NAMES[kind]);
    return existsSync(f) ? f : undefined;
  }

  private readonly digests = new Map<string, { readonly stamp: string; readonly sha256: string }>();

  /** A held file's SHA-256 (kept until the file changes: its size or modification time). */
  sha256(cellId: string, kind: FileKind): string | undefined {
    const f = this.file(cellId, kind);
    if (!f) return undefined;
    const st = statSync(f);
    const stamp = `${st.size}/${st.mtimeMs}`;
    const known = this.digests.get(f);
    if (known?.stamp === stamp) return known.sha256;
    const sha256 = createHash('sha256').update(readFileSync(f)).digest('hex');
    this.digests.set(f, { stamp, sha256 });
    return sha256;
  }

  /**
   * An upload: chunks are written one at a time (the stream paused meanwhile: back-pressure), the
   * sink checks identity, order and size, a stream idle for checkpointIdleMs is cut, and the
   * finished file must match its SHA-256 and parse as a ferry checkpoint before it replaces the
   * previous one.
   */
  upload(call: grpc.ServerReadableStream<CheckpointChunk, Ack>, cb: grpc.sendUnaryData<Ack>): void {
    new Upload(this.host, call, cb).listen();
  }

  download(call: grpc.ServerWritableStream<CheckpointRequest, CheckpointChunk>): void {
    const c = this.host.cellByAttempt(call.request.attemptId);
    const file = c && c.id === call.request.cellId ? this.file(c.id) : undefined;
    if (!c || !file) {
      call.emit(
        'error',
        status(grpcStatusOf('FERRY_ERR_NOT_FOUND'), 'no checkpoint for this attempt [FERRY_ERR_NOT_FOUND]'),
      );
      return;
    }
    const header = {
      attemptId: c.attemptId!,
      cellId: c.id,
      epochsDone: c.checkpointEpochs,
      kind: FileKind.FILE_KIND_CHECKPOINT,
    };
    sendChunks(call, fileChunks(file, header)).catch((e: Error) =>
      call.emit('error', status(grpc.status.INTERNAL, e.message)),
    );
  }

  /** A done cell's best-val weights, the file its worker uploaded before completing. */
  downloadArtifact(call: grpc.ServerWritableStream<ArtifactRequest, CheckpointChunk>): void {
    const id = call.request.cellId;
    const file = this.host.isDone(id) ? this.file(id, FileKind.FILE_KIND_BEST) : undefined;
    if (!file) {
      call.emit(
        'error',
        status(grpcStatusOf('FERRY_ERR_NOT_FOUND'), `no best weights kept for cell ${id} [FERRY_ERR_NOT_FOUND]`),
      );
      return;
    }
    const header = { attemptId: '', cellId: id, epochsDone: 0, kind: FileKind.FILE_KIND_BEST };
    sendChunks(call, fileChunks(file, header)).catch((e: Error) =>
      call.emit('error', status(grpc.status.INTERNAL, e.message)),
    );
  }
}

/** Where a cell's files live under `<state>/checkpoints/<cell>/`. */
const FILE_NAMES: Readonly<Record<FileKind, string>> = {
  [FileKind.FILE_KIND_CHECKPOINT]: 'last.safetensors',
  [FileKind.FILE_KIND_BEST]: 'best.safetensors',
  [FileKind.UNRECOGNIZED]: 'unrecognized',
};

/** One upload stream's state. */
class Upload {
  private sink: ChunkSink | undefined;
  private answered = false;
  private busy = false;
  private idle: NodeJS.Timeout | undefined;

  constructor(
    private readonly host: CheckpointHost,
    private readonly call: grpc.ServerReadableStream<CheckpointChunk, Ack>,
    private readonly cb: grpc.sendUnaryData<Ack>,
  ) {}

  listen(): void {
    this.armIdle();
    this.call.on('error', () => void this.finish({ ok: false, message: 'upload stream broke; checkpoint discarded' }));
    this.call.on('data', (chunk: CheckpointChunk) => this.onChunk(chunk));
    // 'end' can come while the last chunk is still being written: wait for it to land.
    this.call.on('end', () => void this.settle().catch((e: Error) => this.fail(e)));
  }

  private armIdle(): void {
    clearTimeout(this.idle);
    const ms = this.host.checkpointIdleMs;
    this.idle = setTimeout(
      () => void this.finish(status(grpc.status.DEADLINE_EXCEEDED, `checkpoint upload idle for ${ms} ms; discarded`)),
      ms,
    );
  }

  private onChunk(chunk: CheckpointChunk): void {
    if (this.answered) return;
    this.call.pause();
    this.armIdle();
    this.busy = true;
    this.write(chunk)
      .catch((e: Error) => this.fail(e))
      .finally(() => (this.busy = false));
  }

  private async write(chunk: CheckpointChunk): Promise<void> {
    if (!this.sink) {
      const c = this.host.cellByAttempt(chunk.attemptId);
      if (!c || c.id !== chunk.cellId) return this.refuse('attempt is not leased; checkpoint discarded');
      const dir = path.join(this.host.stateDir, 'checkpoints', c.id);
      mkdirSync(dir, { recursive: true });
      if (chunk.kind !== FileKind.FILE_KIND_CHECKPOINT && chunk.kind !== FileKind.FILE_KIND_BEST)
        return this.refuse('an upload is a checkpoint or the best weights');
      const tmp = path.join(dir, `upload-${chunk.kind}-${chunk.attemptId}.tmp`);
      this.sink = await ChunkSink.open(tmp, this.host.maxCheckpointBytes);
    }
    const problem = await this.sink.write(chunk);
    if (problem) return this.refuse(problem);
    if (!this.answered) this.call.resume();
  }

  private async settle(): Promise<void> {
    while (this.busy && !this.answered) await new Promise((r) => setTimeout(r, 5));
    if (this.answered) return;
    if (!this.sink)
      return this.finish({ ok: false, message: 'upload ended without its last chunk; checkpoint discarded' });
    const done = await this.sink.close();
    if ('problem' in done) {
      const message = /last chunk/.test(done.problem)
        ? 'upload ended without its last chunk; checkpoint discarded'
        : `checkpoint ${done.problem}`;
      return this.finish({ ok: false, message });
    }
    const { kind } = done.last;
    const best = kind === FileKind.FILE_KIND_BEST;
    const problem = await checkpointProblem(this.sink.file, best ? null : CHECKPOINT_FORMAT);
    if (problem)
      return this.finish({
        ok: false,
        message: `not a ferry ${best ? 'weights file' : 'checkpoint'}: ${problem}; discarded, the previous one is kept`,
      });
    // A later upload replaces an earlier one atomically.
    renameSync(this.sink.file, path.join(path.dirname(this.sink.file), FILE_NAMES[kind]));
    if (!best) this.host.stored(done.last.attemptId, done.last.epochsDone);
    return this.finish({ ok: true, message: '' });
  }

  private refuse(message: string): Promise<void> {
    this.call.pause();
    return this.finish({ ok: false, message });
  }

  private fail(e: Error): Promise<void> {
    return this.finish(status(grpc.status.INTERNAL, e.message));
  }

  private async finish(result: Ack | grpc.ServiceError): Promise<void> {
    if (this.answered) return;
    this.answered = true;
    clearTimeout(this.idle);
    const ok = !(result instanceof Error) && result.ok;
    if (!ok) await this.sink?.discard();
    if (result instanceof Error) {
      this.cb(result);
      this.call.destroy();
    } else this.cb(null, result);
  }
}
