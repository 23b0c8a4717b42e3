/**
 * Decode worker: runs transformImage for the pool (decode-pool.ts). One message per image; the
 * result's buffer is transferred, not copied.
 */
import { parentPort } from 'node:worker_threads';
import { transformImage } from './pipeline.js';
import type { TransformSpec } from './transforms.js';

interface Request {
  readonly id: number;
  readonly file: string;
  readonly spec: TransformSpec;
  readonly seed: number;
}

parentPort?.on('message', (req: Request) => {
  transformImage(req.file, req.spec, req.seed).then(
    (data) => parentPort?.postMessage({ id: req.id, ok: true, data }, [data.buffer as ArrayBuffer]),
    (e: unknown) => {
      const raw = e instanceof Error ? e.message : String(e);
      // sharp prefixes its own context; keep the reason short and on one line.
      const reason = raw.replace(/^.*cannot decode image: /, '').split('\n')[0] ?? raw;
      parentPort?.postMessage({ id: req.id, ok: false, reason });
    },
  );
});
