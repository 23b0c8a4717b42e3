import { execFile } from 'node:child_process';
import { Writable } from 'node:stream';
import path from 'node:path';
import { main } from '@ferry/cli';
import { REPO_ROOT } from './torch-ref.js';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** Runs `ferry ...` in-process (the same main() the bin calls) and captures its output. */
export async function ferry(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await main(args, { env: { ...process.env, ...env }, stdout, stderr });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** Runs the built `ferry` binary as a child process (checks the packaging, not only the code). */
export function ferryBin(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(REPO_ROOT, 'packages/cli/bin/ferry.js'), ...args],
      { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: 300_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
