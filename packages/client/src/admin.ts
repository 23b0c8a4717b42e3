import type { AdminClient, SweepStatus } from '@ferry/protocol';
import { metadataFor, unary, type ConnectionOptions } from './connection.js';
import { receiveFile } from './transfer.js';

/**
 * A sweep with every cell, page by page (GetSweep answers at most about 4 MiB of cells at a time, so
 * a 10,000-cell sweep never exceeds what a client accepts). `withResults` adds each done cell's
 * result (per-image predictions: large); status views leave it out.
 */
export async function getSweepAll(
  admin: AdminClient,
  conn: ConnectionOptions,
  sweepId: string,
  opts: { withResults: boolean; timeoutMs?: number },
): Promise<SweepStatus> {
  const pages: SweepStatus[] = [];
  let offset = 0;
  do {
    const page = await unary(
      admin.getSweep,
      admin,
      { sweepId, offset, limit: 0, withResults: opts.withResults },
      conn,
      opts.timeoutMs ?? 10_000,
    );
    pages.push(page);
    offset = page.nextOffset;
  } while (offset > 0);
  return { ...pages.at(-1)!, cells: pages.flatMap((p) => p.cells), nextOffset: 0 };
}

/**
 * A done cell's best-val weights (DownloadArtifact) to `dest`, checked (order, completeness,
 * SHA-256); returns that SHA-256.
 */
export function downloadArtifact(
  admin: AdminClient,
  conn: ConnectionOptions,
  cellId: string,
  dest: string,
): Promise<{ sha256: string }> {
  const call = admin.downloadArtifact({ cellId }, metadataFor(conn));
  return receiveFile(call, dest, `best weights of cell ${cellId}`);
}
