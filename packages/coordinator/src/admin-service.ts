import { grpcStatusOf } from '@ferry/common';
import { createHash } from 'node:crypto';
import {
  CellStatus,
  type AdviceRow,
  FerryEvent,
  SUBJECTS,
  type AdminServer,
  type SubmitSweepRequest,
  type SubmitSweepResponse,
  type SweepStatus,
} from '@ferry/protocol';
import type { CoordinatorHost } from './host.js';
import { status } from './rpc.js';
import { waitingFor } from './scheduler.js';
import type { CellEntry } from './scheduler-types.js';
import { toProtoSpec } from './spec.js';
import { parseSweep } from './sweep.js';

/** About this many encoded bytes of cells per GetSweep answer (clients accept 8 MiB). */
const PAGE_BYTES = 4 << 20;

interface Page {
  readonly offset: number;
  readonly limit: number;
  readonly withResults: boolean;
}

/** The most batch jobs a report may hold, and the longest field of one. */
const MAX_JOBS = 10_000;
const MAX_JOB_FIELD = 256;

const notFound = (ref: string) => status(grpcStatusOf('FERRY_ERR_NOT_FOUND'), `no sweep ${ref} [FERRY_ERR_NOT_FOUND]`);

/** The CLI-facing `Admin` service: sweeps in, their state and results out, workers listed. */
export function adminService(host: CoordinatorHost): AdminServer {
  const byRef =
    (type: 'cancel' | 'retry'): AdminServer['cancelSweep'] =>
    (call, cb) => {
      const id = resolveSweep(host, call.request.sweepId);
      if (!id) return cb(notFound(call.request.sweepId));
      const actions = host.apply({ type, now: Date.now(), sweepId: id });
      cb(null, { count: actions.filter((a) => a.type === 'saveCell').length });
    };
  return {
    submitSweep: (call, cb) => cb(null, submitSweep(host, call.request)),
    getSweep: (call, cb) => {
      const r = call.request;
      const id = resolveSweep(host, r.sweepId);
      const s = id
        ? sweepStatus(host, id, { offset: r.offset, limit: r.limit, withResults: r.withResults })
        : undefined;
      if (!s) return cb(notFound(r.sweepId));
      cb(null, s);
    },
    listSweeps: (_call, cb) => cb(null, { sweeps: host.store.sweeps().map((s) => sweepStatus(host, s.id, null)!) }),
    downloadArtifact: (call) => host.checkpoints.downloadArtifact(call),
    putAdvice: (call, cb) => {
      const id = resolveSweep(host, call.request.sweepId);
      if (!id) return cb(notFound(call.request.sweepId));
      // One row per row of the sweep's table: never more rows than the sweep has cells.
      const cells = [...host.state.cells.values()].filter((c) => c.sweepIds.includes(id)).length;
      if (call.request.rows.length > cells)
        return cb(
          status(
            grpcStatusOf('FERRY_ERR_INVALID_ARGUMENT'),
            `${call.request.rows.length} advice rows for a sweep of ${cells} cells [FERRY_ERR_INVALID_ARGUMENT]`,
          ),
        );
      const bad = call.request.rows.find(
        (r) => !r.advice || !['finetune', 'freeze', 'about equal'].includes(r.advice.winner),
      );
      if (bad)
        return cb(
          status(
            grpcStatusOf('FERRY_ERR_INVALID_ARGUMENT'),
            `advice row ${bad.dataset} ${bad.color} ${bad.model} ${bad.weights} has no valid advice [FERRY_ERR_INVALID_ARGUMENT]`,
          ),
        );
      cb(null, { count: putAdvice(host, id, call.request.rows) });
    },
    cancelSweep: byRef('cancel'),
    retryFailed: byRef('retry'),
    ...workerHandlers(host),
  };
}

/** ListWorkers, and ReportJobs that feeds its batch jobs. */
function workerHandlers(host: CoordinatorHost): Pick<AdminServer, 'reportJobs' | 'listWorkers'> {
  return {
    reportJobs: (call, cb) => {
      const given = call.request.jobs;
      const long = given.find((j) => [j.jobId, j.state, j.reason, j.node].some((f) => f.length > MAX_JOB_FIELD));
      if (given.length > MAX_JOBS || long)
        return cb(
          status(
            grpcStatusOf('FERRY_ERR_INVALID_ARGUMENT'),
            `a job report holds at most ${MAX_JOBS} jobs of fields up to ${MAX_JOB_FIELD} characters [FERRY_ERR_INVALID_ARGUMENT]`,
          ),
        );
      host.feed.setJobs(given);
      cb(null, { count: given.length });
    },
    listWorkers: (_call, cb) =>
      cb(null, {
        jobs: [...host.feed.jobs],
        workers: [...host.state.workers.values()].map((w) => {
          const cell = host.state.byWorker.get(w.id);
          return {
            workerId: w.id,
            name: w.name,
            capabilities: {
              backend: w.backend,
              device: w.device,
              memoryBytes: 0,
              ferryVersion: w.ferryVersion,
              host: w.host,
              gpuIndex: -1,
              peerAddress: w.peerAddress,
              slurmJob: w.slurmJob,
            },
            state: w.state,
            lastSeen: new Date(w.lastSeen).toISOString(),
            runningCells: cell ? [cell] : [],
          };
        }),
      }),
  };
}

/** Stores the advisor's rows (replacing those of the same key) and emits each on the event feed. */
function putAdvice(host: CoordinatorHost, sweepId: string, rows: readonly AdviceRow[]): number {
  const time = new Date().toISOString();
  const stored = rows.map((r) => ({ ...r, time: r.time || time }));
  host.store.transaction(() => {
    for (const r of stored) host.store.putAdvice(sweepId, r);
  });
  // The event carries the row's own time, as the store keeps it (a replay says the same).
  for (const advice of stored)
    host.feed.emit(SUBJECTS.advice(sweepId), FerryEvent.fromPartial({ sweepId, time: advice.time, advice }));
  return stored.length;
}

/** A sweep may be named by its id or by its name (the most recent with that name). */
function resolveSweep(host: CoordinatorHost, ref: string): string | undefined {
  if (host.store.sweep(ref)) return ref;
  return host.store
    .sweeps()
    .filter((s) => s.name === ref)
    .at(-1)?.id;
}

function submitSweep(host: CoordinatorHost, r: SubmitSweepRequest): SubmitSweepResponse {
  const sweep = parseSweep(r.yaml, r.fileName || 'sweep.yaml');
  const ids = sweep.cells.map((c) => c.id).sort();
  const sweepId = `${sweep.name}-${createHash('sha256').update(ids.join(',')).digest('hex').slice(0, 8)}`;
  const before = new Set(host.state.cells.keys());
  if (!host.store.sweep(sweepId))
    host.store.addSweep({ id: sweepId, name: sweep.name, yaml: r.yaml, createdAt: new Date().toISOString() });
  for (const [name, fp] of Object.entries(r.datasetFingerprints)) {
    const ds = sweep.cells.find((c) => c.spec.dataset === name);
    if (ds) host.store.pinFingerprint(name, ds.spec.path, fp);
  }
  const createdAt = host.store.sweep(sweepId)!.createdAt;
  host.feed.emit(
    SUBJECTS.sweep(sweepId),
    FerryEvent.fromPartial({
      sweepId,
      time: new Date().toISOString(),
      sweep: { name: sweep.name, cells: sweep.cells.length, createdAt },
    }),
  );
  host.apply({
    type: 'submit',
    now: Date.now(),
    sweepId,
    cells: sweep.cells,
    ...(r.maxAttempts ? { maxAttempts: r.maxAttempts } : {}),
  });
  // A resubmission adds no cell events for existing cells: republish their state for this sweep.
  const existing = sweep.cells.filter((c) => before.has(c.id));
  host.feed.publish(
    existing.map((c) => ({ type: 'saveCell', cell: host.state.cells.get(c.id)! })),
    host.state,
  );
  return { sweepId, name: sweep.name, cells: sweep.cells.length, newCells: sweep.cells.length - existing.length };
}

/**
 * A sweep's counts and one page of its cells (null: no cells, as ListSweeps answers): from
 * `offset`, at most `limit` cells (0: no count limit) and about PAGE_BYTES encoded, so that a
 * 10,000-cell sweep never makes an answer larger than a client accepts.
 */
function sweepStatus(host: CoordinatorHost, sweepId: string, page: Page | null): SweepStatus | undefined {
  const row = host.store.sweep(sweepId);
  if (!row) return undefined;
  const cells = [...host.state.cells.values()]
    .filter((c) => c.sweepIds.includes(sweepId))
    .sort((a, b) => a.seq - b.seq);
  const count = (s: string): number => cells.filter((c) => c.state === s).length;
  const { out, next } = page ? pageOf(host, cells, page) : { out: [], next: 0 };
  return {
    sweepId,
    name: row.name,
    pending: count('pending'),
    running: count('running'),
    done: count('done'),
    failed: count('failed'),
    cancelled: count('cancelled'),
    blocked: count('blocked'),
    waiting: cells.filter((c) => c.state === 'pending' && waitingFor((id) => host.state.cells.get(id), c)).length,
    createdAt: row.createdAt,
    cells: out,
    totalCells: cells.length,
    nextOffset: next,
    advice: host.store.advice(sweepId),
  };
}

function pageOf(host: CoordinatorHost, cells: readonly CellEntry[], page: Page): { out: CellStatus[]; next: number } {
  const out: CellStatus[] = [];
  let bytes = 0;
  for (let i = page.offset; i < cells.length; i++) {
    const cell = cellStatus(host, cells[i]!, page.withResults);
    const size = CellStatus.encode(cell).finish().length;
    if (out.length > 0 && ((page.limit > 0 && out.length >= page.limit) || bytes + size > PAGE_BYTES))
      return { out, next: i };
    out.push(cell);
    bytes += size;
  }
  return { out, next: 0 };
}

function cellStatus(host: CoordinatorHost, c: CellEntry, withResult: boolean): CellStatus {
  const result = c.state === 'done' && withResult ? host.store.result(c.id) : undefined;
  return {
    cellId: c.id,
    spec: toProtoSpec(c.spec),
    state: c.state,
    attempts: c.attempts,
    worker: host.workerName(c.workerId),
    epoch: c.epoch,
    bestValAccuracy: c.state === 'done' ? host.store.bestValAccuracy(c.id) : 0,
    error: c.error ?? '',
    ...(result ? { result } : {}),
    checkpointEpochs: c.checkpointEpochs,
    // One query per running cell (a handful), not per pending one: ferry run asks twice a second.
    lastValAccuracy: c.state === 'running' ? host.store.lastValAccuracy(c.id) : 0,
  };
}
