import { existsSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { TransformSpec } from './transforms.js';

export type DecodeResult =
  { readonly ok: true; readonly data: Float32Array } | { readonly ok: false; readonly reason: string };

interface Pending {
  readonly resolve: (r: DecodeResult) => void;
}

/** The compiled worker script. Under a TS-source runner (tests) the built copy in dist/ is used. */
function workerScript(): string {
  const here = fileURLToPath(new URL('./decode-worker.js', import.meta.url));
  if (existsSync(here)) return here;
  const built = here.replace(`${'/src/'}`, '/dist/');
  if (existsSync(built)) return built;
  throw new Error(`decode worker not found at ${here} or ${built}; run \`npm run build\``);
}

/**
 * A pool of worker threads that decode and transform images (sharp + ferry's transforms), so the
 * trainer's thread never decodes. Tasks are handed to the least-loaded worker.
 */
export class DecodePool {
  private readonly workers: { worker: Worker; inFlight: Set<number> }[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(readonly threads: number = Math.max(1, os.availableParallelism())) {
    const script = workerScript();
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(script);
      const slot = { worker, inFlight: new Set<number>() };
      worker.on('message', (msg: { id: number } & DecodeResult) => {
        slot.inFlight.delete(msg.id);
        // Idle workers must not keep the process alive; busy ones must (someone awaits them).
        if (slot.inFlight.size === 0) worker.unref();
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        p?.resolve(msg.ok ? { ok: true, data: msg.data } : { ok: false, reason: msg.reason });
      });
      worker.on('error', (e) => {
        // A crashed worker fails what it held; the pool keeps the others.
        for (const id of slot.inFlight) {
          this.pending.get(id)?.resolve({ ok: false, reason: `decode worker crashed: ${e.message}` });
          this.pending.delete(id);
        }
        slot.inFlight.clear();
      });
      worker.unref();
      this.workers.push(slot);
    }
  }

  run(file: string, spec: TransformSpec, seed: number): Promise<DecodeResult> {
    if (this.closed) return Promise.resolve({ ok: false, reason: 'decode pool is closed' });
    const slot = this.workers.reduce((a, b) => (b.inFlight.size < a.inFlight.size ? b : a));
    const id = this.nextId++;
    slot.inFlight.add(id);
    slot.worker.ref();
    return new Promise((resolve) => {
      this.pending.set(id, { resolve });
      slot.worker.postMessage({ id, file, spec, seed });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
