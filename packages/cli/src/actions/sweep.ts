import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseSweep } from '@ferry/coordinator';
import { resultsTable, tableCsv, tableMarkdown } from '@ferry/common';
import { IMAGENET_MEAN, IMAGENET_STD, InvalidArgumentError, datasetFingerprint, studyTransforms } from '@ferry/core';
import type { CellStatus, ListWorkersResponse, SweepStatus } from '@ferry/protocol';
import {
  adminClient,
  downloadArtifact,
  ferryErrorFromGrpc,
  getSweepAll,
  unary,
  type ConnectionOptions,
} from '@ferry/client';
import { connectionFrom } from '../connection.js';
import { describeJob } from '../slurm/fleet.js';
import { err, out, table, type CliIo } from '../io.js';
import type { ConnectionFlags } from '../kit.js';
import { cellLabel, waitingSource } from '../progress.js';
import { resultsHtml } from '../report.js';
import { outcomes, reportCells, sweepAdvice } from '../sweep-results.js';

type Admin = ReturnType<typeof adminClient>;

export interface SubmitFlags extends ConnectionFlags {
  readonly dataRoot?: string;
  readonly maxAttempts: number;
}

export interface ArtifactsFlags extends ConnectionFlags {
  readonly out: string;
}

export interface ResultsFlags extends ConnectionFlags {
  readonly format: string;
  readonly alpha: number;
  readonly by: readonly string[];
}

/** Runs `fn` with an admin client; gRPC errors become ferry's (UNAVAILABLE, NOT_FOUND, ...). */
async function withAdmin(
  flags: ConnectionFlags,
  io: CliIo,
  fn: (admin: Admin, conn: ConnectionOptions) => Promise<number>,
): Promise<number> {
  const conn = connectionFrom(flags, io);
  const admin = adminClient(conn);
  try {
    return await fn(admin, conn);
  } catch (e) {
    throw ferryErrorFromGrpc(e, conn.address) ?? e;
  } finally {
    admin.close();
  }
}

/** `ferry sweep submit FILE`. */
export async function submit(file: string, o: SubmitFlags, io: CliIo): Promise<number> {
  return withAdmin(o, io, async (admin, conn) => {
    const yaml = await readFile(file, 'utf8').catch((e: Error) => {
      throw new InvalidArgumentError(`cannot read the sweep file ${file}: ${e.message}`);
    });
    const sweep = parseSweep(yaml, file);
    const fingerprints: Record<string, string> = {};
    const root = o.dataRoot;
    if (root)
      for (const c of sweep.cells)
        fingerprints[c.spec.dataset] ??= (await datasetFingerprint(path.resolve(root, c.spec.path))).fingerprint;
    const r = await unary(
      admin.submitSweep,
      admin,
      { yaml, fileName: path.basename(file), datasetFingerprints: fingerprints, maxAttempts: o.maxAttempts },
      conn,
      30_000,
    );
    out(io, `sweep ${r.sweepId}: ${r.cells} cells (${r.newCells} new)`);
    return 0;
  });
}

function statusRows(s: SweepStatus): string[][] {
  const byId = new Map(s.cells.map((c) => [c.cellId, c]));
  return [
    [
      'CELL',
      'DATASET',
      'COLOR',
      'STRATEGY',
      'MODEL',
      'SEED',
      'STATE',
      'EPOCH',
      'ATTEMPTS',
      'WORKER',
      'BEST VAL',
      'ERROR',
    ],
    ...s.cells.map((c) => {
      // A cell of a later stage whose source is not done yet waits for it (it is not stuck).
      const src = waitingSource(byId, c);
      return [
        c.cellId.slice(0, 10),
        c.spec!.dataset,
        c.spec!.color,
        c.spec!.strategy,
        c.spec!.model,
        String(c.spec!.seed),
        src ? 'waiting' : c.state,
        `${c.epoch}/${c.spec!.epochs}`,
        String(c.attempts),
        c.worker,
        c.state === 'done' ? `${(c.bestValAccuracy * 100).toFixed(1)}%` : '',
        (src ? `waiting for ${src.cellId.slice(0, 8)} (${cellLabel(src)}, ${src.state})` : c.error).slice(0, 80),
      ];
    }),
  ];
}

/** `ferry sweep status SWEEP`. */
export async function status(id: string, o: ConnectionFlags, io: CliIo): Promise<number> {
  return withAdmin(o, io, async (admin, conn) => {
    const s = await getSweepAll(admin, conn, id, { withResults: false });
    out(
      io,
      `sweep ${s.sweepId} (${s.name}): ${s.done} done, ${s.running} running, ${s.pending} pending${s.waiting ? ` (${s.waiting} waiting for their source)` : ''}, ${s.failed} failed, ${s.blocked ? `${s.blocked} blocked, ` : ''}${s.cancelled} cancelled`,
    );
    out(io, table(statusRows(s)));
    const fleet = await unary(admin.listWorkers, admin, {}, conn, 10_000);
    const rows = workerRows(fleet);
    if (rows.length > 1) {
      out(io);
      out(io, table(rows));
    }
    return 0;
  });
}

/**
 * The workers, and the batch jobs that have no worker yet: a Slurm job waiting in the queue is a
 * worker to come (with Slurm's reason), not a missing one; an ended job is shown until Slurm
 * forgets it.
 */
export function workerRows(r: ListWorkersResponse): string[][] {
  const byJob = new Map(r.workers.filter((w) => w.capabilities?.slurmJob).map((w) => [w.capabilities!.slurmJob, w]));
  const jobs = new Map(r.jobs.map((j) => [j.jobId, j]));
  return [
    ['WORKER', 'HOST', 'SLURM JOB', 'STATE', 'CELL'],
    ...r.workers.map((w) => {
      const job = jobs.get(w.capabilities?.slurmJob ?? '');
      return [
        w.name,
        w.capabilities?.host ?? '',
        job ? `${job.jobId} ${describeJob(job)}` : (w.capabilities?.slurmJob ?? ''),
        w.state,
        (w.runningCells[0] ?? '').slice(0, 10),
      ];
    }),
    ...r.jobs
      .filter((j) => !byJob.has(j.jobId))
      .map((j) => [
        '-',
        j.node || '-',
        `${j.jobId} ${describeJob(j)}`,
        j.state === 'PENDING' ? 'queued' : 'no worker',
        '',
      ]),
  ];
}

/** `ferry sweep results SWEEP`. */
export async function results(id: string, o: ResultsFlags, io: CliIo): Promise<number> {
  return withAdmin(o, io, async (admin, conn) => {
    const s = await getSweepAll(admin, conn, id, { withResults: true, timeoutMs: 60_000 });
    const t = resultsTable(outcomes(s), { alpha: o.alpha, by: o.by, advice: sweepAdvice(s) });
    if (o.format === 'csv') out(io, tableCsv(t));
    else if (o.format === 'json') out(io, JSON.stringify({ sweep: s.sweepId, table: t }, null, 2));
    else if (o.format === 'md') out(io, tableMarkdown(t));
    else out(io, resultsHtml(s.name, t, reportCells(s)));
    if (s.done < s.cells.length)
      err(
        io,
        `note: ${s.cells.length - s.done} of ${s.cells.length} cells are not done${s.blocked ? ` (${s.blocked} blocked by a source that failed: not failures of their own)` : ''}`,
      );
    return 0;
  });
}

/** `ferry sweep retry SWEEP` and `ferry sweep cancel SWEEP`. */
export async function retryOrCancel(
  what: 'retry' | 'cancel',
  id: string,
  o: ConnectionFlags,
  io: CliIo,
): Promise<number> {
  return withAdmin(o, io, async (admin, conn) => {
    const fn = what === 'retry' ? admin.retryFailed : admin.cancelSweep;
    const r = await unary(fn, admin, { sweepId: id, offset: 0, limit: 0, withResults: false }, conn, 10_000);
    out(io, `${what === 'retry' ? 'requeued' : 'cancelled'} ${r.count} cell(s)`);
    return 0;
  });
}

/** `ferry sweep list`. */
export async function list(o: ConnectionFlags, io: CliIo): Promise<number> {
  return withAdmin(o, io, async (admin, conn) => {
    const r = await unary(admin.listSweeps, admin, {}, conn, 10_000);
    out(
      io,
      table([
        ['SWEEP', 'NAME', 'DONE', 'RUNNING', 'PENDING', 'FAILED', 'CREATED'],
        ...r.sweeps.map((s) => [
          s.sweepId,
          s.name,
          String(s.done),
          String(s.running),
          String(s.pending),
          String(s.failed),
          s.createdAt,
        ]),
      ]),
    );
    return 0;
  });
}

/**
 * `ferry sweep artifacts SWEEP --out DIR`: each done cell's best-val weights as the coordinator
 * keeps them, named for a reader (`<dataset>-<color>-<strategy>-<model>-s<seed>`, then the
 * settings that differ between cells of that name, then the cell id if still ambiguous), with a
 * JSON file of what using them needs: classes in label order, the val transform, the accuracy.
 */
export async function artifacts(id: string, o: ArtifactsFlags, io: CliIo): Promise<number> {
  return withAdmin(o, io, async (admin, conn) => {
    const s = await getSweepAll(admin, conn, id, { withResults: true, timeoutMs: 60_000 });
    const done = s.cells.filter((c) => c.state === 'done' && c.result);
    await mkdir(o.out, { recursive: true });
    const names = artifactNames(done);
    let missing = 0;
    for (const c of done) {
      const base = path.join(o.out, names.get(c.cellId)!);
      try {
        await downloadArtifact(admin, conn, c.cellId, `${base}.safetensors`);
      } catch (e) {
        missing++;
        err(io, `${names.get(c.cellId)}: ${ferryErrorFromGrpc(e, conn.address)?.message ?? (e as Error).message}`);
        continue;
      }
      await writeFile(`${base}.json`, `${JSON.stringify(artifactMeta(c), null, 2)}\n`);
      out(io, `${base}.safetensors`);
    }
    if (done.length < s.cells.length)
      err(io, `note: ${s.cells.length - done.length} of ${s.cells.length} cells are not done`);
    return missing > 0 ? 1 : 0;
  });
}

/** Readable, unique file names: the cell's axes, then what differs between cells of one name, then its id. */
function artifactNames(cells: readonly CellStatus[]): Map<string, string> {
  const base = (c: CellStatus): string => {
    const p = c.spec!;
    return `${p.dataset}-${p.color}-${p.strategy.replace(/[:=]/g, '_')}-${p.model}-s${p.seed}`;
  };
  const byBase = new Map<string, CellStatus[]>();
  for (const c of cells) byBase.set(base(c), [...(byBase.get(base(c)) ?? []), c]);
  const names = new Map<string, string>();
  for (const [b, group] of byBase) {
    const differing = ['lr', 'batchSize', 'epochs', 'momentum', 'weightDecay', 'imageSize'].filter(
      (k) => new Set(group.map((c) => String((c.spec as unknown as Record<string, unknown>)[k]))).size > 1,
    );
    for (const c of group) {
      const extra = differing.map((k) => `-${k}${String((c.spec as unknown as Record<string, unknown>)[k])}`).join('');
      names.set(c.cellId, `${b}${extra}`);
    }
  }
  const counts = new Map<string, number>();
  for (const n of names.values()) counts.set(n, (counts.get(n) ?? 0) + 1);
  for (const [cell, n] of names) if (counts.get(n)! > 1) names.set(cell, `${n}-${cell.slice(0, 12)}`);
  return names;
}

/** What using a cell's weights needs: torchvision's val transform at the cell's size, classes in order. */
function artifactMeta(c: CellStatus): unknown {
  const spec = c.spec!;
  const r = c.result!;
  return {
    cellId: c.cellId,
    model: spec.model,
    classes: r.classes,
    // torchvision's Resize(resize) + CenterCrop(crop) (+ Grayscale(3) for gray), ToTensor, Normalize(mean, std).
    transform: {
      ...studyTransforms(spec.imageSize, spec.color as 'rgb' | 'gray').val,
      mean: IMAGENET_MEAN,
      std: IMAGENET_STD,
    },
    bestValAccuracy: r.bestValAccuracy,
    bestEpoch: r.bestEpoch,
    spec,
  };
}
