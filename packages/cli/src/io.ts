import type { Writable } from 'node:stream';

/** What a command may touch of the outside world; only the bin entry reads process.*. */
export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdout: Writable & { isTTY?: boolean; columns?: number };
  readonly stderr: Writable & { isTTY?: boolean; columns?: number };
}

export function out(io: CliIo, line = ''): void {
  io.stdout.write(`${line}\n`);
}

export function err(io: CliIo, line = ''): void {
  io.stderr.write(`${line}\n`);
}

/** A one-line progress bar on stderr (redrawn in place on a TTY, a line per 10% otherwise). */
export class ProgressLine {
  private lastDecile = -1;

  constructor(private readonly io: CliIo) {}

  update(fraction: number, text: string): void {
    const f = Math.max(0, Math.min(1, fraction));
    if (this.io.stderr.isTTY) {
      const width = 30;
      const filled = Math.round(f * width);
      this.io.stderr.write(
        `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(f * 100).toFixed(1).padStart(5)}% ${text}\x1b[K`,
      );
      return;
    }
    const decile = Math.floor(f * 10);
    if (decile !== this.lastDecile) {
      this.lastDecile = decile;
      this.io.stderr.write(`${(f * 100).toFixed(0).padStart(3)}% ${text}\n`);
    }
  }

  done(text: string): void {
    if (this.io.stderr.isTTY) this.io.stderr.write(`\r${text}\x1b[K\n`);
    else this.io.stderr.write(`${text}\n`);
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A plain-text table with left-aligned columns. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
