import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';

const require = createRequire(import.meta.url);

/**
 * Starts TensorFlow.js's multi-threaded wasm build (XNNPACK thread pool) under Node, which the
 * package does not do by itself:
 * - its multithread flag is hard-coded false in Node;
 * - emscripten's pthread workers are created from blob: URLs, which Node's Worker refuses, so the
 *   blobs are written to files (with the bundle-level names the factory's source refers to);
 * - the pool is capped at half the logical cores, so the core count is doubled during start-up;
 * - the pool threads hold a ref on their workers and would keep the process alive: they are unref'd.
 * Everything patched is restored once the backend has started. Returns the thread count obtained.
 */
export async function startThreadedWasm(
  wasm: { setThreadsCount(n: number): void; getThreadsCount(): number },
  threads: number,
): Promise<number> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-wasm-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const prelude =
    "var require$$0=require('fs'),require$$1=require('path'),require$$3=require('perf_hooks'),require$$4=require('os'),commonjsGlobal=globalThis;" +
    "URL.createObjectURL=(b)=>b&&b.__ferryFile?b.__ferryFile:'';URL.revokeObjectURL=()=>{};\n";
  let n = 0;
  class FileBlob {
    readonly __ferryFile: string;
    constructor(parts: unknown[]) {
      this.__ferryFile = path.join(dir, `part${n++}.js`);
      writeFileSync(this.__ferryFile, prelude + parts.map(String).join(''));
    }
  }
  const g = globalThis as unknown as { Blob: unknown };
  const savedBlob = g.Blob;
  const savedCreate = URL.createObjectURL;
  const savedCpus = os.cpus;
  const wt = require('node:worker_threads') as { Worker: new (...a: unknown[]) => { unref(): void } };
  const SavedWorker = wt.Worker;
  try {
    g.Blob = FileBlob;
    URL.createObjectURL = ((b: unknown) =>
      (b as FileBlob | null)?.__ferryFile ?? savedCreate(b as Blob)) as typeof URL.createObjectURL;
    os.cpus = () => {
      const c = savedCpus();
      return [...c, ...c];
    };
    wt.Worker = class extends SavedWorker {
      constructor(...args: unknown[]) {
        super(...args);
        this.unref();
      }
      ref(): this {
        return this;
      }
    };
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    wasm.setThreadsCount(threads);
    const ok = await tf.setBackend('wasm');
    if (!ok) throw new Error('the threaded wasm build did not start');
    return wasm.getThreadsCount();
  } finally {
    g.Blob = savedBlob;
    URL.createObjectURL = savedCreate;
    os.cpus = savedCpus;
    wt.Worker = SavedWorker;
  }
}
