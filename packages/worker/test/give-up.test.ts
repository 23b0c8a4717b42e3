import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, test } from 'vitest';
import { isFerryError } from '@ferry/common';
import { FerryWorker } from '@ferry/worker';

/** A port nothing listens on (bound, then closed). */
function deadPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

test('a worker whose coordinator never answers stops after giveUpAfterMs with FERRY_ERR_UNAVAILABLE (a batch job whose run is gone)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-give-up-'));
  const lines: string[] = [];
  const worker = await FerryWorker.create({
    connection: { address: `127.0.0.1:${await deadPort()}` },
    dataRoot: dir,
    workDir: path.join(dir, 'work'),
    cacheDir: path.join(dir, 'cache'),
    backend: 'cpu',
    reconnectMinMs: 100,
    reconnectMaxMs: 300,
    giveUpAfterMs: 1_500,
    log: (l) => lines.push(l),
  });
  const t0 = Date.now();
  const e = await worker.run().then(
    () => null,
    (x: unknown) => x,
  );
  const took = Date.now() - t0;
  expect(isFerryError(e) && e.code).toBe('FERRY_ERR_UNAVAILABLE');
  expect((e as Error).message).toMatch(/has not answered for \d+ s \(--give-up-after-ms 1500\): stopping/);
  expect(took).toBeGreaterThanOrEqual(1_500);
  expect(took).toBeLessThan(10_000);
  expect(lines.some((l) => l.includes('cannot reach the coordinator'))).toBe(true);
}, 30_000);
