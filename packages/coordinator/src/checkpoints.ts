import { CHECKPOINT_FORMAT, grpcStatusOf } from '@ferry/common';
import { ChunkSink, fileChunks, sendChunks } from '@ferry/client';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Ack, CheckpointChunk, CheckpointRequest } from '@ferry/protocol';
import { checkpointProblem } from './checkpoint-file.js';
import { status } from './rpc.js';
import type { CellEntry } from './scheduler-types.js';

/** What the checkpoint handlers need of the coordinator. */
export interface CheckpointHost {
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

  file(cellId: string): string | undefined {
    const f = path.join(this.host.stateDir, 'checkpoints', cellId, 'last.safetensors');
    return existsSync(f) ? f : undefined;
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
    const header = { attemptId: c.attemptId!, cellId: c.id, epochsDone: c.checkpointEpochs };
    sendChunks(call, fileChunks(file, header)).catch((e: Error) =>
      call.emit('error', status(grpc.status.INTERNAL, e.message)),
    );
  }
}

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
      this.sink = await ChunkSink.open(path.join(dir, `upload-${chunk.attemptId}.tmp`), this.host.maxCheckpointBytes);
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
    const problem = await checkpointProblem(this.sink.file, CHECKPOINT_FORMAT);
    if (problem)
      return this.finish({
        ok: false,
        message: `not a ferry checkpoint: ${problem}; discarded, the previous one is kept`,
      });
    // A later epoch's upload replaces an earlier one atomically.
    renameSync(this.sink.file, path.join(path.dirname(this.sink.file), 'last.safetensors'));
    this.host.stored(done.last.attemptId, done.last.epochsDone);
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
