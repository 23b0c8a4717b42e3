import { readFileSync, statSync } from 'node:fs';
import { usageError } from './kit.js';

/**
 * The token in `file` (`--token-file`): a token on a command line or in an environment shows in
 * `ps` to every user of a shared machine (a Slurm login node); a file only its owner can read does
 * not. A file that others can read is refused, with the command that fixes it. Surrounding
 * whitespace (the newline an editor adds) is not part of the token.
 */
export function readTokenFile(file: string): string {
  let mode: number;
  let text: string;
  try {
    mode = statSync(file).mode;
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw usageError(`--token-file ${file}: ${(e as Error).message}`);
  }
  if ((mode & 0o077) !== 0)
    throw usageError(
      `--token-file ${file} can be read by other users (mode ${(mode & 0o777).toString(8)}): chmod 600 ${file}`,
    );
  const token = text.trim();
  if (!token) throw usageError(`--token-file ${file} is empty`);
  return token;
}
