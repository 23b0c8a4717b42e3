import { InvalidArgumentError } from '@ferry/core';
import { startDashboard } from '@ferry/dashboard';
import { Args } from '../args.js';
import { err, out, type CliIo } from '../io.js';

const USAGE = 'ferry dashboard --nats nats://[user:pass@|token@]HOST:PORT [--listen 127.0.0.1:8080] [--token T] [--insecure]';

/** `ferry dashboard`: replays and follows the FERRY stream; prints `dashboard on URL` once listening. */
export async function dashboardCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(argv, { nats: { type: 'string' }, listen: { type: 'string' }, token: { type: 'string' }, insecure: { type: 'boolean' } }, USAGE);
  const nats = args.string('nats') ?? io.env['FERRY_NATS'];
  if (!nats) throw new InvalidArgumentError(`--nats is required\nusage: ${USAGE}`);
  const token = args.string('token') ?? io.env['FERRY_DASHBOARD_TOKEN'];
  let d;
  try {
    d = await startDashboard({
      listen: args.string('listen') ?? '127.0.0.1:8080',
      nats: { url: nats, name: 'ferry-dashboard' },
      ...(token ? { token } : {}),
      insecure: args.flag('insecure'),
      log: (l) => err(io, `[dashboard] ${l}`),
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
