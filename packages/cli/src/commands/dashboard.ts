import type { Command } from 'commander';
import type { DashboardFlags } from '../actions/dashboard.js';
import { examples, type CommandContext } from '../kit.js';

/** `ferry dashboard`. */
export function dashboardDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('dashboard')
    .description('live progress, curves and the comparison table in a browser (NATS, a coordinator, or a run folder)')
    .option('--nats <url>', 'follow NATS JetStream: nats://[user:pass@|token@]HOST:PORT (default: FERRY_NATS)')
    .option('--coordinator <host:port>', "follow a coordinator's own event feed (no NATS needed)")
    .option('--coordinator-token <token>', "the coordinator's token (default: FERRY_TOKEN)")
    .option('--coordinator-token-file <file>', "read the coordinator's token from this file (readable only by you)")
    .option('--coordinator-tls-ca <file>', "the coordinator's CA certificate (a coordinator with TLS)")
    .option('--run <runs/SWEEP>', "a finished run's output folder (read-only)")
    .option('--listen <host:port>', 'where to serve', '127.0.0.1:8080')
    .option('--token <token>', 'required of every request (default: FERRY_DASHBOARD_TOKEN)')
    .option('--insecure', 'listen on a non-loopback address without a token', false)
    .action(async () => {
      const { dashboardCommand } = await import('../actions/dashboard.js');
      ctx.code = await dashboardCommand(cmd.opts<DashboardFlags>(), ctx.io);
    });
  examples(
    cmd,
    'ferry dashboard --run runs/demo',
    'ferry dashboard --coordinator 127.0.0.1:7070 --listen 0.0.0.0:8080 --token SECRET',
    'ferry dashboard --nats nats://127.0.0.1:4222',
  );
}
