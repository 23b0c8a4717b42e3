import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '@ferry/common';
import { downloadArtifact } from './admin.js';
import { adminClient, type ConnectionOptions } from './connection.js';

/**
 * Where a source cell's best weights are cached: by cell id and content (the first 16 hex digits
 * of their SHA-256), so a source retrained under the same id (its run folder removed, another
 * cluster) is never mistaken for the copy cached before.
 */
export function sourceWeightsFile(cacheDir: string, sourceId: string, sha256: string): string {
  checkCellId(sourceId);
  if (!/^[0-9a-f]{64}$/.test(sha256))
    throw new FerryError('FERRY_ERR_INVALID_ARGUMENT', `not a SHA-256: ${JSON.stringify(sha256)}`);
  return path.join(cacheDir, 'weights', 'cells', `${sourceId}.${sha256.slice(0, 16)}.safetensors`);
}

/** Ids and digests are hex; anything else must not become a path. */
function checkCellId(sourceId: string): void {
  if (!/^[0-9a-f]{1,64}$/.test(sourceId))
    throw new FerryError('FERRY_ERR_INVALID_ARGUMENT', `not a cell id: ${JSON.stringify(sourceId)}`);
}

/**
 * A cell of a later stage starts from its source cell's best-val weights, which the coordinator
 * keeps (the source's worker uploaded them before completing). They are fetched with the same
 * call as `ferry sweep artifacts` (Admin.DownloadArtifact: chunks checked for order, completeness
 * and SHA-256, renamed into place only when all of it checks) into the cache dir, named by source
 * id and content. `expectedSha256` (the coordinator's digest of the file it holds, sent with the
 * assignment) finds a cached copy without a download: a retried or resumed attempt, or another
 * cell of the same source; without it (`ferry run`'s advisor) the file is always fetched. No
 * worker needs the file beforehand.
 */
export async function fetchSourceWeights(
  conn: ConnectionOptions,
  cacheDir: string,
  sourceId: string,
  expectedSha256 = '',
): Promise<{ readonly file: string; readonly fetched: boolean; readonly bytes: number }> {
  if (expectedSha256) {
    const cached = sourceWeightsFile(cacheDir, sourceId, expectedSha256);
    if (existsSync(cached)) return { file: cached, fetched: false, bytes: statSync(cached).size };
  } else checkCellId(sourceId);
  const dir = path.join(cacheDir, 'weights', 'cells');
  mkdirSync(dir, { recursive: true });
  // A name of its own: workers sharing a cache dir (--gpus all) may fetch the same source at once.
  const tmp = path.join(dir, `${sourceId}.${randomUUID()}.part`);
  const admin = adminClient(conn);
  try {
    const { sha256 } = await downloadArtifact(admin, conn, sourceId, tmp);
    const file = sourceWeightsFile(cacheDir, sourceId, sha256);
    renameSync(tmp, file);
    return { file, fetched: true, bytes: statSync(file).size };
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
}
