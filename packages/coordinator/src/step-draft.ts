import { CellTable } from './cell-table.js';
import type {
  CellEntry,
  SchedulerAction,
  SchedulerConfig,
  SchedulerState,
  StepResult,
  WorkerEntry,
} from './scheduler-types.js';

/**
 * What one scheduler step has decided so far: the state it started from (never changed) plus its
 * changes, and the actions in order. Reads see the changes; `commit` makes the next state from
 * them. The draft's own maps are copies made on the first write, local to the step: no state that
 * anyone holds ever changes.
 */
export class StepDraft {
  readonly actions: SchedulerAction[] = [];
  private readonly table: CellTable;
  /** Cells set in this step, by id, in the order first set. */
  private readonly changedCells = new Map<string, CellEntry>();
  private workers: Map<string, WorkerEntry> | null = null;
  private byAttempt: Map<string, string> | null = null;
  private byWorker: Map<string, string> | null = null;
  private nextSeq: number;

  constructor(private readonly base: SchedulerState) {
    this.table = base.cells instanceof CellTable ? base.cells : CellTable.of(base.cells.values());
    this.nextSeq = base.nextSeq;
  }

  get config(): SchedulerConfig {
    return this.base.config;
  }

  get recoveringUntil(): number {
    return this.base.recoveringUntil;
  }

  cell(id: string): CellEntry | undefined {
    return this.changedCells.get(id) ?? this.table.get(id);
  }

  /** Every cell in submission order, as it is now (later changes in this step are not seen). */
  cells(): Iterable<CellEntry> {
    if (this.changedCells.size === 0) return this.table.values();
    const now = Array.from(this.table.values(), (c) => this.changedCells.get(c.id) ?? c);
    for (const c of this.changedCells.values()) if (!this.table.has(c.id)) now.push(c);
    return now;
  }

  worker(id: string): WorkerEntry | undefined {
    return (this.workers ?? this.base.workers).get(id);
  }

  /** Every worker, in registration order, as it is now (a copy: safe to change workers meanwhile). */
  allWorkers(): WorkerEntry[] {
    return [...(this.workers ?? this.base.workers).values()];
  }

  /** The cell a running attempt belongs to. */
  cellOfAttempt(attemptId: string): string | undefined {
    return (this.byAttempt ?? this.base.byAttempt).get(attemptId);
  }

  /** The cell a worker runs (any rank). */
  cellOfWorker(workerId: string): string | undefined {
    return (this.byWorker ?? this.base.byWorker).get(workerId);
  }

  /** The cells with a running attempt, as they are now (a copy). */
  runningCellIds(): string[] {
    return [...(this.byAttempt ?? this.base.byAttempt).values()];
  }

  /** The next submission number. */
  takeSeq(): number {
    return this.nextSeq++;
  }

  /** Sets a cell (keeping the attempt and worker indexes in step) and saves it. */
  setCell(c: CellEntry): void {
    const old = this.cell(c.id);
    if (old?.attemptId || (c.state === 'running' && c.attemptId)) {
      const byAttempt = (this.byAttempt ??= new Map(this.base.byAttempt));
      const byWorker = (this.byWorker ??= new Map(this.base.byWorker));
      if (old?.attemptId) {
        byAttempt.delete(old.attemptId);
        for (const m of old.members) if (byWorker.get(m) === c.id) byWorker.delete(m);
      }
      if (c.state === 'running' && c.attemptId) {
        byAttempt.set(c.attemptId, c.id);
        for (const m of c.members) byWorker.set(m, c.id);
      }
    }
    this.changedCells.set(c.id, c);
    this.actions.push({ type: 'saveCell', cell: c });
  }

  /** Sets a worker and saves it. */
  setWorker(w: WorkerEntry): void {
    (this.workers ??= new Map(this.base.workers)).set(w.id, w);
    this.actions.push({ type: 'saveWorker', worker: w });
  }

  /** The next state (the one it started from, with the changes) and the actions. */
  commit(): StepResult {
    const state: SchedulerState = {
      config: this.base.config,
      cells: this.changedCells.size > 0 ? this.table.with(this.changedCells.values()) : this.table,
      workers: this.workers ?? this.base.workers,
      byAttempt: this.byAttempt ?? this.base.byAttempt,
      byWorker: this.byWorker ?? this.base.byWorker,
      nextSeq: this.nextSeq,
      recoveringUntil: this.base.recoveringUntil,
    };
    return { state, actions: this.actions };
  }
}
