import { existsSync } from 'node:fs';
import path from 'node:path';
import { Store, storeEvents } from '@ferry/coordinator';
import { InvalidArgumentError } from '@ferry/core';
import { startDashboard, type EventFeed } from '@ferry/dashboard';
import { watchCoordinatorEvents } from '@ferry/client';
import { err, out, type CliIo } from '../io.js';
import { readTokenFile } from '../token-file.js';

export interface DashboardFlags {
  readonly nats?: string;
  readonly coordinator?: string;
  readonly coordinatorToken?: string;
  readonly coordinatorTokenFile?: string;
  readonly coordinatorTlsCa?: string;
  readonly run?: string;
  readonly listen: string;
  readonly token?: string;
  readonly insecure: boolean;
}

/**
 * `ferry dashboard`: shows sweeps from NATS JetStream (replayed, then live), from a coordinator's
 * own event feed (no NATS needed), or from a finished run's output folder (its coordinator state,
 * read-only); prints `dashboard on URL` once listening.
 */
export async function dashboardCommand(o: DashboardFlags, io: CliIo): Promise<number> {
  const log = (l: string): void => err(io, `[dashboard] ${l}`);
  const { coordinator, run } = o;
  const nats = coordinator || run ? undefined : (o.nats ?? io.env['FERRY_NATS']);
  if ([nats, coordinator, run].filter((x) => x !== undefined).length !== 1)
    throw new InvalidArgumentError('give one of --nats, --coordinator or --run\nusage: ferry dashboard --help');
  const token = o.token ?? io.env['FERRY_DASHBOARD_TOKEN'];
  let feed: EventFeed | undefined;
  if (coordinator) {
    const ctoken =
      o.coordinatorTokenFile !== undefined
        ? readTokenFile(o.coordinatorTokenFile)
        : (o.coordinatorToken ?? io.env['FERRY_TOKEN']);
    const ca = o.coordinatorTlsCa;
    let watch: ReturnType<typeof watchCoordinatorEvents> | undefined;
    feed = {
      start: async (onEvent) => {
        const conn = { address: coordinator, ...(ctoken ? { token: ctoken } : {}), ...(ca ? { tls: { ca } } : {}) };
        watch = watchCoordinatorEvents(conn, onEvent, log);
        await watch.ready;
      },
      stop: async () => watch?.stop(),
    };
  } else if (run) feed = runFolderFeed(run);
  let d;
  try {
    d = await startDashboard({
      listen: o.listen,
      ...(nats ? { nats: { url: nats, name: 'ferry-dashboard' } } : { feed: feed! }),
      ...(token ? { token } : {}),
      insecure: o.insecure,
      log,
    });
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
  out(io, `dashboard on ${d.url}`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await d.stop();
  return 0;
}

/** A finished (or stopped) run's output folder: its coordinator state, read once and never written. */
function runFolderFeed(dir: string): EventFeed {
  const file = path.join(dir, 'state', 'ferry.sqlite');
  if (!existsSync(file))
    throw new InvalidArgumentError(
      `${dir} is not a ferry run's output folder (no state/ferry.sqlite); give the --out of a ferry run`,
    );
  return {
    start: async (onEvent) => {
      const store = new Store(file, { readOnly: true });
      try {
        for (const e of storeEvents(store)) onEvent(e.event);
      } finally {
        store.close();
      }
    },
    stop: async () => undefined,
  };
}
