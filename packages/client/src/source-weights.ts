import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '@ferry/common';
import { downloadArtifact } from './admin.js';
import { adminClient, type ConnectionOptions } from './connection.js';

/** Where a source cell's best weights are cached (a cell of a later stage, and its advice, start from them). */
export function sourceWeightsFile(cacheDir: string, sourceId: string): string {
  // Ids are hashes; anything else must not become a path.
  if (!/^[0-9a-f]{1,64}$/.test(sourceId))
    throw new FerryError('FERRY_ERR_INVALID_ARGUMENT', `not a cell id: ${JSON.stringify(sourceId)}`);
  return path.join(cacheDir, 'weights', 'cells', `${sourceId}.safetensors`);
}

/**
 * A cell of a later stage starts from its source cell's best-val weights, which the coordinator
 * keeps (the source's worker uploaded them before completing). They are fetched with the same
 * call as `ferry sweep artifacts` (Admin.DownloadArtifact: chunks checked for order, completeness
 * and SHA-256, renamed into place only when all of it checks) into the cache dir, by source cell
 * id: a done cell's best weights never change, so a retried or resumed attempt, or another cell
 * of the same source, finds them there. No worker needs the file beforehand. `ferry run`'s advisor
 * fetches them the same way, into the same cache.
 */
export async function fetchSourceWeights(
  conn: ConnectionOptions,
  cacheDir: string,
  sourceId: string,
): Promise<{ readonly file: string; readonly fetched: boolean; readonly bytes: number }> {
  const file = sourceWeightsFile(cacheDir, sourceId);
  if (existsSync(file)) return { file, fetched: false, bytes: statSync(file).size };
  mkdirSync(path.dirname(file), { recursive: true });
  // A name of its own: workers sharing a cache dir (--gpus all) may fetch the same source at once.
  const tmp = `${file}.${randomUUID()}`;
  const admin = adminClient(conn);
  try {
    await downloadArtifact(admin, conn, sourceId, tmp);
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new FerryError(
      'FERRY_ERR_SOURCE_WEIGHTS',
      `cannot get the best weights of source cell ${sourceId} from the coordinator: ${(e as Error).message}`,
      { cause: e },
    );
  } finally {
    admin.close();
  }
  return { file, fetched: true, bytes: statSync(file).size };
}
