import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ConnectionOptions } from '@ferry/client';
import type { RunningCell } from '@ferry/protocol';

/** What the heartbeat thread sends: the worker's session and the attempts it holds. */
export interface HeartbeatState {
  readonly sessionId: string | null;
  readonly intervalMs: number;
  readonly running: readonly RunningCell[];
  readonly imagesPerSec: number;
}

/** What it hears back, for the session it sent with. */
export type HeartbeatReply =
  | {
      readonly type: 'reply';
      readonly sessionId: string;
      readonly reregister: boolean;
      readonly cancelAttempts: readonly string[];
    }
  | { readonly type: 'failed'; readonly sessionId: string; readonly message: string };

export interface HeartbeatThreadData {
  readonly connection: ConnectionOptions;
  readonly workerId: string;
  /** Written with the time of each answered heartbeat (`ferry health --worker`). */
  readonly heartbeatFile: string;
}

/** The compiled thread script; under a TS-source runner (tests) the built copy in dist/. */
function threadScript(): string {
  const here = fileURLToPath(new URL('./heartbeat-thread.js', import.meta.url));
  if (existsSync(here)) return here;
  const built = here.replace(`${'/src/'}`, '/dist/');
  if (existsSync(built)) return built;
  throw new Error(`heartbeat thread not found at ${here} or ${built}; run \`npm run build\``);
}

/**
 * Heartbeats from a thread of their own, so that a training step that holds the worker's main
 * event loop (a long synchronous kernel, a loaded machine) does not let its lease expire: the lease
 * says the process is alive. A stopped process (SIGSTOP) stops this thread too, and its lease
 * expires as it should. The main thread pushes its state on every change and every interval; the
 * thread sends the latest it has and posts the coordinator's answers back.
 */
export class HeartbeatThread {
  private readonly thread: Worker;

  constructor(data: HeartbeatThreadData, onReply: (r: HeartbeatReply) => void) {
    this.thread = new Worker(threadScript(), { workerData: data });
    this.thread.on('message', onReply);
    this.thread.unref();
  }

  update(state: HeartbeatState): void {
    this.thread.postMessage(state);
  }

  async stop(): Promise<void> {
    await this.thread.terminate();
  }
}
