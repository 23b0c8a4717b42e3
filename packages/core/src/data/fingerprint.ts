import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { DatasetError } from '../errors.js';
import { isImageFile } from './folder.js';

/**
 * A dataset copy's fingerprint: SHA-256 over its image files' relative paths and sizes (sorted).
 * Cheap (no file contents read), and enough to tell two workers' copies apart.
 */
export async function datasetFingerprint(root: string): Promise<{ fingerprint: string; files: number }> {
  const lines: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      throw new DatasetError(`dataset folder ${dir} is not readable: ${(e as Error).message}`, { cause: e });
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && isImageFile(e.name))
        lines.push(`${path.relative(root, p).split(path.sep).join('/')}\t${(await stat(p)).size}`);
    }
  };
  await walk(root);
  lines.sort();
  return { fingerprint: createHash('sha256').update(lines.join('\n')).digest('hex'), files: lines.length };
}
