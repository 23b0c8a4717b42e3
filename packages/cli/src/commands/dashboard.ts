import { existsSync } from 'node:fs';
import path from 'node:path';
import { Store, storeEvents } from '@ferry/coordinator';
import { InvalidArgumentError } from '@ferry/core';
import { startDashboard, type EventFeed } from '@ferry/dashboard';
import { watchCoordinatorEvents } from '@ferry/client';
import { Args } from '../args.js';
import { err, out, type CliIo } from '../io.js';

export const USAGE =
  'ferry dashboard (--nats nats://[user:pass@|token@]HOST:PORT | --coordinator HOST:PORT [--coordinator-token T] | --run runs/<sweep>) [--listen 127.0.0.1:8080] [--token T] [--insecure]';

/**
 * `ferry dashboard`: shows sweeps from NATS JetStream (replayed, then live), from a coordinator's
 * own event feed (no NATS needed), or from a finished run's output folder (its coordinator state,
 * read-only); prints `dashboard on URL` once listening.
 */
export async function dashboardCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(
    argv,
    {
      nats: { type: 'string' },
      coordinator: { type: 'string' },
      'coordinator-token': { type: 'string' },
      run: { type: 'string' },
      listen: { type: 'string' },
      token: { type: 'string' },
      insecure: { type: 'boolean' },
    },
    USAGE,
  );
  const log = (l: string): void => err(io, `[dashboard] ${l}`);
  const coordinator = args.string('coordinator');
  const run = args.string('run');
  const nats = coordinator || run ? undefined : (args.string('nats') ?? io.env['FERRY_NATS']);
  if ([nats, coordinator, run].filter((x) => x !== undefined).length !== 1)
    throw new InvalidArgumentError(`give one of --nats, --coordinator or --run\nusage: ${USAGE}`);
  const token = args.string('token') ?? io.env['FERRY_DASHBOARD_TOKEN'];
  let feed: EventFeed | undefined;
  if (coordinator) {
    const ctoken = args.string('coordinator-token') ?? io.env['FERRY_TOKEN'];
    let watch: ReturnType<typeof watchCoordinatorEvents> | undefined;
    feed = {
      start: async (onEvent) => {
        watch = watchCoordinatorEvents({ address: coordinator, ...(ctoken ? { token: ctoken } : {}) }, onEvent, log);
        await watch.ready;
      },
      stop: async () => watch?.stop(),
    };
  } else if (run) feed = runFolderFeed(run);
  let d;
  try {
    d = await startDashboard({
      listen: args.string('listen') ?? '127.0.0.1:8080',
      ...(nats ? { nats: { url: nats, name: 'ferry-dashboard' } } : { feed: feed! }),
      ...(token ? { token } : {}),
      insecure: args.flag('insecure'),
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
