import { renameSync, writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { coordinatorClient, unary } from '@ferry/client';
import type { HeartbeatReply, HeartbeatState, HeartbeatThreadData } from './heartbeat.js';

/* The heartbeat thread (see HeartbeatThread): one call in flight at a time, every intervalMs. */

const data = workerData as HeartbeatThreadData;
const client = coordinatorClient(data.connection);
let state: HeartbeatState = { sessionId: null, intervalMs: 1_000, running: [], imagesPerSec: 0 };
let started = false;

const post = (r: HeartbeatReply): void => parentPort!.postMessage(r);

async function beat(): Promise<void> {
  const { sessionId } = state;
  if (!sessionId) return;
  try {
    const r = await unary(
      client.heartbeat,
      client,
      { workerId: data.workerId, sessionId, running: [...state.running], imagesPerSec: state.imagesPerSec },
      data.connection,
      5_000,
    );
    stamp();
    post({ type: 'reply', sessionId, reregister: r.reregister, cancelAttempts: r.cancelAttempts });
  } catch (e) {
    post({ type: 'failed', sessionId, message: e instanceof Error ? e.message : String(e) });
  }
}

/** The answered time, written whole: a reader (a health check, a test) never sees the file truncated. */
function stamp(): void {
  const tmp = `${data.heartbeatFile}.tmp`;
  writeFileSync(tmp, `${new Date().toISOString()}\n`);
  renameSync(tmp, data.heartbeatFile);
}

function schedule(): void {
  setTimeout(() => void beat().finally(schedule), state.intervalMs);
}

parentPort!.on('message', (next: HeartbeatState) => {
  state = next;
  if (!started) {
    started = true;
    schedule();
  }
});
