import { statSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '@ferry/core';
import { adminClient, unary } from '@ferry/client';
import { connectionFrom } from '../connection.js';
import { out, type CliIo } from '../io.js';
import type { ConnectionFlags } from '../kit.js';

export interface HealthFlags extends ConnectionFlags {
  readonly dashboard?: string;
  readonly worker: boolean;
  readonly workDir: string;
  readonly maxAgeS: number;
}

/** `ferry health`: exit 0 when the component answers (container health checks and probes). */
export async function healthCommand(o: HealthFlags, io: CliIo): Promise<number> {
  if (o.worker) return workerHealth(o, io);
  if (o.dashboard) return dashboardHealth(o.dashboard, io);
  const conn = connectionFrom(o, io);
  const admin = adminClient(conn);
  try {
    await unary(admin.listSweeps, admin, {}, conn, 5_000);
  } catch (e) {
    throw new InvalidArgumentError(
      `coordinator at ${conn.address}: ${(e as { details?: string }).details ?? (e as Error).message}`,
    );
  } finally {
    admin.close();
  }
  out(io, 'coordinator ok');
  return 0;
}

function workerHealth(o: HealthFlags, io: CliIo): number {
  const file = path.join(o.workDir, 'heartbeat');
  let age: number;
  try {
    age = (Date.now() - statSync(file).mtimeMs) / 1000;
  } catch {
    throw new InvalidArgumentError(`no heartbeat yet (${file})`);
  }
  if (age > o.maxAgeS)
    throw new InvalidArgumentError(`last heartbeat answered ${age.toFixed(0)} s ago (more than ${o.maxAgeS} s)`);
  out(io, `worker ok (heartbeat ${age.toFixed(0)} s ago)`);
  return 0;
}

async function dashboardHealth(url: string, io: CliIo): Promise<number> {
  const r = await fetch(url, { signal: AbortSignal.timeout(5_000) }).catch((e: Error) => {
    throw new InvalidArgumentError(`${url}: ${e.message}`);
  });
  if (!r.ok) throw new InvalidArgumentError(`${url}: HTTP ${r.status}`);
  out(io, 'dashboard ok');
  return 0;
}
