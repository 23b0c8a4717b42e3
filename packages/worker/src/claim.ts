import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { RunningCell } from '@ferry/protocol';

/**
 * The crash-recovery claim: the single-worker attempt this worker is running, kept in
 * `<workDir>/attempt.json` while it runs. A process that dies with it (kill -9, out of memory)
 * leaves it behind; the next process of the same worker claims the attempt at registration, so
 * the coordinator keeps its lease and delivers it again to resume from the last checkpoint.
 * (Data-parallel attempts are never claimed: a group cannot take a rank back mid-generation.)
 */
export class ClaimFile {
  constructor(readonly file: string) {}

  /** The claim a previous process left; null when there is none, or it was cut short (then it goes). */
  read(): RunningCell | null {
    if (!existsSync(this.file)) return null;
    try {
      const c = JSON.parse(readFileSync(this.file, 'utf8')) as Partial<RunningCell>;
      if (typeof c.cellId === 'string' && typeof c.attemptId === 'string' && typeof c.epoch === 'number')
        return { cellId: c.cellId, attemptId: c.attemptId, epoch: c.epoch };
    } catch {
      // a claim cut short by the crash: nothing to resume
    }
    this.clear();
    return null;
  }

  write(cell: RunningCell): void {
    writeFileSync(this.file, `${JSON.stringify(cell)}\n`);
  }

  clear(): void {
    rmSync(this.file, { force: true });
  }
}
