import path from 'node:path';
import type { Command } from 'commander';
import type { HealthFlags } from '../actions/health.js';
import { connectionFlags, examples, int, withConnection, type CommandContext } from '../kit.js';

/** `ferry health`: a coordinator (the default), --dashboard URL or --worker. */
export function healthDefinition(program: Command, ctx: CommandContext): void {
  const cmd = connectionFlags(
    program.command('health').description('exit 0 when a coordinator, dashboard or worker is healthy (probes)'),
  )
    .option('--dashboard <url>', 'probe a dashboard instead')
    .option('--worker', "probe this machine's worker (its heartbeat file) instead", false)
    .option('--work-dir <dir>', "the worker's --work-dir", path.join('.ferry', 'worker'))
    .option('--max-age-s <s>', 'the oldest heartbeat that is healthy', int('max-age-s', 1), 60)
    .action(async () => {
      const { healthCommand } = await import('../actions/health.js');
      ctx.code = await healthCommand(withConnection<HealthFlags>(cmd), ctx.io);
    });
  examples(
    cmd,
    'ferry health --coordinator 127.0.0.1:7070 --token SECRET',
    'ferry health --dashboard http://127.0.0.1:8080/healthz',
    'ferry health --worker --work-dir /var/lib/ferry/worker',
  );
}
