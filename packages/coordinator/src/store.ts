import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AdviceRow, CellResult, EpochMetrics } from '@ferry/protocol';
import type { CellEntry, WorkerEntry } from './scheduler-types.js';
import { HYPER_PARAMETER_DEFAULTS, parseCellSpec } from '@ferry/common';

export interface AttemptRow {
  readonly id: string;
  readonly workerId: string;
  readonly startedAt: number;
  readonly endedAt: number | null;
  readonly outcome: string | null;
  readonly error: string | null;
}

export interface SweepRow {
  readonly id: string;
  readonly name: string;
  readonly yaml: string;
  readonly createdAt: string;
}

/**
 * The coordinator's state in SQLite (WAL): sweeps, cells, attempts, epoch metrics, results,
 * workers, dataset fingerprints. Everything the scheduler decides is written here before it is
 * acted on, so a restarted coordinator resumes from this file alone.
 */
export class Store {
  private readonly db: Database.Database;

  /** `readOnly`: a finished run's state, shown (`ferry dashboard --run DIR`) and never written. */
  constructor(file: string, options: { readonly readOnly?: boolean } = {}) {
    if (options.readOnly) {
      this.db = new Database(file, { readonly: true, fileMustExist: true });
      return;
    }
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS sweeps (id TEXT PRIMARY KEY, name TEXT NOT NULL, yaml TEXT NOT NULL, created_at TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS cells (
        id TEXT PRIMARY KEY, spec_json TEXT NOT NULL, sweep_ids TEXT NOT NULL, state TEXT NOT NULL,
        attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, attempt_id TEXT, worker_id TEXT,
        lease_until INTEGER NOT NULL, checkpoint_epochs INTEGER NOT NULL, epoch INTEGER NOT NULL,
        error TEXT, seq INTEGER NOT NULL, excluded_workers TEXT NOT NULL, result_json TEXT, updated_at TEXT NOT NULL,
        members TEXT NOT NULL DEFAULT '[]', generation INTEGER NOT NULL DEFAULT 0, waiting_since INTEGER);
      CREATE TABLE IF NOT EXISTS attempts (
        id TEXT PRIMARY KEY, cell_id TEXT NOT NULL, worker_id TEXT NOT NULL, started_at INTEGER NOT NULL,
        ended_at INTEGER, outcome TEXT, error TEXT);
      CREATE TABLE IF NOT EXISTS epochs (cell_id TEXT NOT NULL, attempt_id TEXT NOT NULL, epoch INTEGER NOT NULL, metrics_json TEXT NOT NULL,
        PRIMARY KEY (cell_id, epoch));
      CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, name TEXT NOT NULL, session_id TEXT NOT NULL, backend TEXT NOT NULL,
        device TEXT NOT NULL, last_seen INTEGER NOT NULL, state TEXT NOT NULL, idle_since INTEGER, peer_address TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL DEFAULT '', slurm_job TEXT NOT NULL DEFAULT '', ferry_version TEXT NOT NULL DEFAULT '');
      CREATE TABLE IF NOT EXISTS datasets (name TEXT NOT NULL, path TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (name, path));
      CREATE INDEX IF NOT EXISTS cells_state ON cells(state);
      CREATE TABLE IF NOT EXISTS advice (sweep_id TEXT NOT NULL, dataset TEXT NOT NULL, color TEXT NOT NULL, model TEXT NOT NULL,
        weights TEXT NOT NULL, row_json TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (sweep_id, dataset, color, model, weights));
    `);
    // State written before a column existed (a run resumed after an upgrade): the column is added.
    const workerColumns = new Set(
      (this.db.prepare('PRAGMA table_info(workers)').all() as { name: string }[]).map((c) => c.name),
    );
    for (const column of ['host', 'slurm_job', 'ferry_version'])
      if (!workerColumns.has(column)) this.db.exec(`ALTER TABLE workers ADD COLUMN ${column} TEXT NOT NULL DEFAULT ''`);
  }

  private readonly statements = new Map<string, Database.Statement>();

  /** Prepared once per SQL text: the hot paths (one write per scheduler decision) reuse them. */
  private stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  addSweep(s: SweepRow): void {
    this.stmt('INSERT OR REPLACE INTO sweeps (id, name, yaml, created_at) VALUES (?, ?, ?, ?)').run(
      s.id,
      s.name,
      s.yaml,
      s.createdAt,
    );
  }

  sweeps(): SweepRow[] {
    return this.stmt(
      'SELECT id, name, yaml, created_at AS createdAt FROM sweeps ORDER BY created_at',
    ).all() as SweepRow[];
  }

  sweep(id: string): SweepRow | undefined {
    return this.stmt('SELECT id, name, yaml, created_at AS createdAt FROM sweeps WHERE id = ?').get(id) as
      SweepRow | undefined;
  }

  saveCell(c: CellEntry): void {
    this.stmt(
      `INSERT INTO cells (id, spec_json, sweep_ids, state, attempts, max_attempts, attempt_id, worker_id, lease_until, checkpoint_epochs, epoch, error, seq, excluded_workers, updated_at, members, generation, waiting_since)
         VALUES (@id, @spec, @sweeps, @state, @attempts, @maxAttempts, @attemptId, @workerId, @leaseUntil, @checkpointEpochs, @epoch, @error, @seq, @excluded, @now, @members, @generation, @waitingSince)
         ON CONFLICT(id) DO UPDATE SET sweep_ids=@sweeps, state=@state, attempts=@attempts, max_attempts=@maxAttempts, attempt_id=@attemptId,
           worker_id=@workerId, lease_until=@leaseUntil, checkpoint_epochs=@checkpointEpochs, epoch=@epoch, error=@error, excluded_workers=@excluded, updated_at=@now,
           members=@members, generation=@generation, waiting_since=@waitingSince`,
    ).run({
      id: c.id,
      spec: JSON.stringify(c.spec),
      sweeps: JSON.stringify(c.sweepIds),
      state: c.state,
      attempts: c.attempts,
      maxAttempts: c.maxAttempts,
      attemptId: c.attemptId,
      workerId: c.workerId,
      leaseUntil: c.leaseUntil,
      checkpointEpochs: c.checkpointEpochs,
      epoch: c.epoch,
      error: c.error,
      seq: c.seq,
      excluded: JSON.stringify(c.excludedWorkers),
      now: new Date().toISOString(),
      members: JSON.stringify(c.members),
      generation: c.generation,
      waitingSince: c.waitingSince,
    });
  }

  cells(): CellEntry[] {
    const rows = this.stmt('SELECT * FROM cells ORDER BY seq').all() as Record<string, unknown>[];
    return rows.map((r) => ({
      id: String(r['id']),
      // A state written before a hyper-parameter existed: that cell ran with its default.
      spec: parseCellSpec(
        { ...HYPER_PARAMETER_DEFAULTS, ...(JSON.parse(String(r['spec_json'])) as object) },
        `the state's cell ${String(r['id'])}`,
      ),
      sweepIds: JSON.parse(String(r['sweep_ids'])) as string[],
      state: r['state'] as CellEntry['state'],
      attempts: Number(r['attempts']),
      maxAttempts: Number(r['max_attempts']),
      attemptId: (r['attempt_id'] as string | null) ?? null,
      workerId: (r['worker_id'] as string | null) ?? null,
      leaseUntil: Number(r['lease_until']),
      checkpointEpochs: Number(r['checkpoint_epochs']),
      epoch: Number(r['epoch']),
      error: (r['error'] as string | null) ?? null,
      seq: Number(r['seq']),
      excludedWorkers: JSON.parse(String(r['excluded_workers'])) as string[],
      members: JSON.parse(String(r['members'])) as string[],
      generation: Number(r['generation']),
      waitingSince: r['waiting_since'] === null ? null : Number(r['waiting_since']),
    }));
  }

  setResult(cellId: string, result: CellResult): void {
    this.stmt('UPDATE cells SET result_json = ? WHERE id = ?').run(JSON.stringify(CellResult.toJSON(result)), cellId);
  }

  result(cellId: string): CellResult | undefined {
    const r = this.stmt('SELECT result_json FROM cells WHERE id = ?').get(cellId) as
      { result_json: string | null } | undefined;
    return r?.result_json ? readResult(r.result_json) : undefined;
  }

  /** A done cell's best validation accuracy without reading its whole result (status polls). */
  bestValAccuracy(cellId: string): number {
    const r = this.stmt("SELECT json_extract(result_json, '$.bestValAccuracy') AS v FROM cells WHERE id = ?").get(
      cellId,
    ) as { v: number | null } | undefined;
    return typeof r?.v === 'number' ? r.v : 0;
  }

  saveWorker(w: WorkerEntry): void {
    this.stmt(
      `INSERT INTO workers (id, name, session_id, backend, device, last_seen, state, idle_since, peer_address, host, slurm_job, ferry_version) VALUES (@id, @name, @sessionId, @backend, @device, @lastSeen, @state, @idleSince, @peerAddress, @host, @slurmJob, @ferryVersion)
         ON CONFLICT(id) DO UPDATE SET name=@name, session_id=@sessionId, backend=@backend, device=@device, last_seen=@lastSeen, state=@state, idle_since=@idleSince, peer_address=@peerAddress, host=@host, slurm_job=@slurmJob, ferry_version=@ferryVersion`,
    ).run(w);
  }

  workers(): WorkerEntry[] {
    // Idle-since does not survive a restart: a worker is idle again once it polls.
    return (
      this.stmt(
        'SELECT id, name, session_id AS sessionId, backend, device, last_seen AS lastSeen, state, peer_address AS peerAddress, host, slurm_job AS slurmJob, ferry_version AS ferryVersion FROM workers',
      ).all() as Omit<WorkerEntry, 'idleSince'>[]
    ).map((w) => ({ ...w, idleSince: null }));
  }

  attemptStarted(id: string, cellId: string, workerId: string, at: number): void {
    this.stmt('INSERT OR REPLACE INTO attempts (id, cell_id, worker_id, started_at) VALUES (?, ?, ?, ?)').run(
      id,
      cellId,
      workerId,
      at,
    );
  }

  attemptEnded(id: string, outcome: string, error: string | null, at: number): void {
    this.stmt('UPDATE attempts SET ended_at = ?, outcome = ?, error = ? WHERE id = ?').run(at, outcome, error, id);
  }

  attempts(cellId: string): AttemptRow[] {
    return this.stmt(
      'SELECT id, worker_id AS workerId, started_at AS startedAt, ended_at AS endedAt, outcome, error FROM attempts WHERE cell_id = ? ORDER BY started_at',
    ).all(cellId) as AttemptRow[];
  }

  saveEpoch(cellId: string, attemptId: string, metrics: EpochMetrics): void {
    this.stmt('INSERT OR REPLACE INTO epochs (cell_id, attempt_id, epoch, metrics_json) VALUES (?, ?, ?, ?)').run(
      cellId,
      attemptId,
      metrics.epoch,
      JSON.stringify(EpochMetrics.toJSON(metrics)),
    );
  }

  /** The validation accuracy of a cell's latest epoch report (0 when none). */
  lastValAccuracy(cellId: string): number {
    const r = this.stmt(
      "SELECT json_extract(metrics_json, '$.valAccuracy') AS v FROM epochs WHERE cell_id = ? ORDER BY epoch DESC LIMIT 1",
    ).get(cellId) as { v: number | null } | undefined;
    return typeof r?.v === 'number' ? r.v : 0;
  }

  epochs(cellId: string): { epoch: number; metrics: EpochMetrics }[] {
    const rows = this.stmt(
      'SELECT epoch, metrics_json AS metricsJson FROM epochs WHERE cell_id = ? ORDER BY epoch',
    ).all(cellId) as { epoch: number; metricsJson: string }[];
    return rows.map((r) => ({ epoch: r.epoch, metrics: readMetrics(r.metricsJson) }));
  }

  /** Stores the advisor's row for a sweep (proto3 JSON of ferry.v1.AdviceRow), replacing the same row key. */
  putAdvice(sweepId: string, row: AdviceRow): void {
    this.stmt(
      `INSERT INTO advice (sweep_id, dataset, color, model, weights, row_json, seq)
         VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM advice))
         ON CONFLICT(sweep_id, dataset, color, model, weights) DO UPDATE SET row_json = excluded.row_json`,
    ).run(sweepId, row.dataset, row.color, row.model, row.weights, JSON.stringify(AdviceRow.toJSON(row)));
  }

  /** A sweep's advice rows in the order first stored (none in a state written before advice was kept). */
  advice(sweepId: string): AdviceRow[] {
    if (!this.hasTable('advice')) return [];
    const rows = this.stmt('SELECT row_json AS j FROM advice WHERE sweep_id = ? ORDER BY seq').all(sweepId) as {
      j: string;
    }[];
    return rows.map((r) => AdviceRow.fromJSON(JSON.parse(r.j)));
  }

  /** A read-only store of an older run may lack tables added since. */
  private hasTable(name: string): boolean {
    return this.stmt("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
  }

  /** The dataset's recorded fingerprint, or records `fingerprint` as it when there is none yet. */
  pinFingerprint(name: string, datasetPath: string, fingerprint: string): string {
    this.stmt('INSERT OR IGNORE INTO datasets (name, path, fingerprint) VALUES (?, ?, ?)').run(
      name,
      datasetPath,
      fingerprint,
    );
    return (
      this.stmt('SELECT fingerprint FROM datasets WHERE name = ? AND path = ?').get(name, datasetPath) as {
        fingerprint: string;
      }
    ).fingerprint;
  }

  close(): void {
    this.db.close();
  }
}

/*
 * Results and epoch metrics are kept as the proto3 JSON of their wire messages (readable with
 * sqlite3's json_extract). Rows written before they were messages hold the engine's JSON, the same
 * field names but confusion matrices as plain arrays of rows: read as rows of counts.
 */
function confusionRows(v: unknown): unknown {
  return Array.isArray(v) ? v.map((row: unknown) => (Array.isArray(row) ? { counts: row } : row)) : v;
}

function metricsJson(o: Record<string, unknown>): Record<string, unknown> {
  return { ...o, confusion: confusionRows(o['confusion']) };
}

function readMetrics(text: string): EpochMetrics {
  return EpochMetrics.fromJSON(metricsJson(JSON.parse(text) as Record<string, unknown>));
}

function readResult(text: string): CellResult {
  const o = metricsJson(JSON.parse(text) as Record<string, unknown>);
  const epochs = Array.isArray(o['epochs']) ? (o['epochs'] as Record<string, unknown>[]).map(metricsJson) : [];
  return CellResult.fromJSON({ ...o, epochs });
}
