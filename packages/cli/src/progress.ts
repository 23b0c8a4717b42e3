import { cellLabel as specLabel, waitingForSource } from '@ferry/common';
import type { SweepStatus } from '@ferry/protocol';
import type { CliIo } from './io.js';

/**
 * `ferry run`'s terminal view of a sweep: an overall line (epochs done, cells, ETA) and one line
 * per running cell (dataset, colour, strategy, model, seed, epoch, last val accuracy, ETA), plus a
 * line for each cell that fails or gets an error, when it happens. On a terminal the block is
 * redrawn in place; otherwise (a log file, CI) the overall line is printed at each tenth and a cell
 * line at each finished epoch.
 */

type Cell = SweepStatus['cells'][number];

/**
 * Epoch timing of one cell, to estimate what is left. `at` is when `epoch` was seen; `aligned`
 * says it was seen as it ended. The first sight of a cell is not: the time from it to the next
 * epoch holds the cell's start-up (data, model, weights: several epochs' worth on a small
 * dataset) or only part of an epoch, so no pace is taken from it.
 */
interface Pace {
  epoch: number;
  at: number;
  aligned: boolean;
  secondsPerEpoch: number | null;
  /** The attempt and worker it was seen on: another (a resumed cell) starts up again. */
  run: string;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** The source cell a pending cell still waits for (@ferry/common's waitingForSource), if known. */
export function waitingSource(cells: ReadonlyMap<string, Cell>, c: Cell): Cell | undefined {
  const id = waitingForSource(c, (x) => cells.get(x)?.state);
  return id === null ? undefined : cells.get(id);
}

/** A cell of a sweep's status as messages name it. */
export function cellLabel(c: Cell): string {
  return specLabel(c.spec!);
}

/** `waiting for <source label> (<id>, <its state>): N cell(s)`, one line per source, for the waiting cells. */
export function waitingLines(s: SweepStatus): string[] {
  const byId = new Map(s.cells.map((c) => [c.cellId, c]));
  const count = new Map<Cell, number>();
  for (const c of s.cells) {
    const src = waitingSource(byId, c);
    if (src) count.set(src, (count.get(src) ?? 0) + 1);
  }
  return [...count].map(
    ([src, n]) => `  waiting for ${cellLabel(src)} (${src.cellId.slice(0, 8)}, ${src.state}): ${n} cell(s)`,
  );
}

export class RunProgress {
  /** Waiting lines already printed (not on a terminal: each once). */
  private readonly saidWaiting = new Set<string>();

  private readonly pace = new Map<string, Pace>();
  private readonly errors = new Map<string, string>();
  private drawn = 0;
  private lastTenth = -1;
  private readonly tty: boolean;

  constructor(
    private readonly io: CliIo,
    private readonly now: () => number = Date.now,
  ) {
    this.tty = (io.stderr as { isTTY?: boolean }).isTTY === true;
  }

  /** The lines for a sweep status (pure apart from the pace it keeps). */
  lines(s: SweepStatus): { overall: string; cells: string[]; news: string[]; percent: number } {
    const t = this.now();
    const news: string[] = [];
    let epochsDone = 0;
    let epochsAll = 0;
    let rate = 0; // epochs per second across running cells
    const cells: string[] = [];
    for (const c of s.cells) {
      const epochs = c.spec!.epochs;
      const done = c.state === 'done' ? epochs : Math.min(c.epoch, epochs);
      epochsDone += done;
      epochsAll += epochs;
      if (c.error && this.errors.get(c.cellId) !== c.error) {
        this.errors.set(c.cellId, c.error);
        const what = c.state === 'failed' ? 'failed' : c.state === 'blocked' ? 'blocked' : 'error (will retry)';
        news.push(`${what}: ${cellLabel(c)}: ${c.error}`);
      }
      const p = this.pace.get(c.cellId);
      const run = `${c.attempts}/${c.worker}`;
      if (!p || done < p.epoch || run !== p.run)
        this.pace.set(c.cellId, {
          epoch: done,
          at: t,
          aligned: false,
          secondsPerEpoch: p?.secondsPerEpoch ?? null,
          run,
        });
      else if (done > p.epoch) {
        const spe = (t - p.at) / 1000 / (done - p.epoch);
        const last = p.secondsPerEpoch;
        this.pace.set(c.cellId, {
          epoch: done,
          at: t,
          aligned: true,
          secondsPerEpoch: !p.aligned ? last : last === null ? spe : 0.5 * last + 0.5 * spe,
          run,
        });
        if (!this.tty && c.state === 'running') news.push(this.cellLine(c, done));
      }
      if (c.state !== 'running') continue;
      const spe = this.pace.get(c.cellId)!.secondsPerEpoch;
      if (spe) rate += 1 / spe;
      cells.push(this.cellLine(c, done));
    }
    const left = epochsAll - epochsDone;
    const eta = rate > 0 ? formatDuration((left / rate) * 1000) : left === 0 ? '0 s' : '?';
    const pct = epochsAll ? (100 * epochsDone) / epochsAll : 0;
    const staged = `${s.waiting ? `, ${s.waiting} waiting` : ''}${s.blocked ? `, ${s.blocked} blocked` : ''}`;
    const overall = `${pct.toFixed(0).padStart(3)}% ${s.done}/${s.cells.length} done, ${s.running} running${staged}, ${s.failed} failed; epochs ${epochsDone}/${epochsAll}; ETA ${eta}`;
    const waiting = waitingLines(s);
    if (this.tty) cells.push(...waiting);
    else
      for (const w of waiting.filter((x) => !this.saidWaiting.has(x))) {
        this.saidWaiting.add(w);
        news.push(w.trimStart());
      }
    return { overall, cells, news, percent: pct };
  }

  private cellLine(c: Cell, done: number): string {
    const spe = this.pace.get(c.cellId)?.secondsPerEpoch ?? null;
    const left = c.spec!.epochs - done;
    const val = c.lastValAccuracy > 0 ? `, val ${(100 * c.lastValAccuracy).toFixed(1)}%` : '';
    return `  ${cellLabel(c)}: epoch ${done}/${c.spec!.epochs}${val}, ETA ${spe === null ? '?' : formatDuration(left * spe * 1000)}${c.worker ? ` (${c.worker})` : ''}`;
  }

  update(s: SweepStatus): void {
    const { overall, cells, news, percent } = this.lines(s);
    if (this.tty) {
      this.clear();
      for (const n of news) this.io.stderr.write(`${n}\n`);
      const block = [overall, ...cells];
      this.io.stderr.write(`${block.join('\n')}\n`);
      this.drawn = block.length;
      return;
    }
    for (const n of news) this.io.stderr.write(`${n}\n`);
    const tenth = Math.floor(percent / 10);
    if (tenth !== this.lastTenth) {
      this.lastTenth = tenth;
      this.io.stderr.write(`${overall}\n`);
    }
  }

  /** Removes the live block (before other output, and at the end). */
  clear(): void {
    if (this.tty && this.drawn > 0) this.io.stderr.write(`\x1b[${this.drawn}F\x1b[J`);
    this.drawn = 0;
  }

  done(text: string): void {
    this.clear();
    this.io.stderr.write(`${text}\n`);
  }
}
