import { DEFAULT_ALPHA } from '@ferry/common';
import type { Command } from 'commander';
import type { RunFlags } from '../actions/run.js';
import { BACKEND_CHOICES, alpha, examples, int, type CommandContext } from '../kit.js';

/** `ferry run SWEEP.yaml`. */
export function runDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('run')
    .description(
      'the embedded default: coordinator + N local workers, supervised; the sweep, the results table and report',
    )
    .argument('<SWEEP.yaml>', 'the sweep file')
    .option('--workers <n>', 'local workers', int('workers', 1), 1)
    .option('--data-root <dir>', "where the sweep's dataset paths are", 'data')
    .option('--out <dir>', 'results, logs, coordinator state and checkpoints (default: runs/<sweep name>)')
    .option('--backend <backend>', BACKEND_CHOICES, 'auto')
    .option('--nats <url>', "a NATS server for live events (default: FERRY_NATS, else a nats-server of the run's own)")
    .option('--no-nats', 'no NATS: the dashboard follows the coordinator')
    .option(
      '--dashboard-port <port>',
      'the dashboard port (taken: any free one; 0: any)',
      int('dashboard-port', 0),
      8080,
    )
    .option('--serve', 'keep the dashboard after the sweep until Ctrl-C (the default in a terminal)', false)
    .option('--alpha <p>', 'the significance level of a verdict', alpha, DEFAULT_ALPHA)
    .option(
      '--no-advise',
      "skip the advisor: by default each finetune/freeze row gets the advisor's prediction (a heuristic, docs/advisor.md), shown beside the verdict",
    )
    .action(async (file: string) => {
      const { runCommand } = await import('../actions/run.js');
      ctx.code = await runCommand(file, cmd.opts<RunFlags>(), ctx.io);
    });
  examples(cmd, 'ferry run examples/demo.yaml --workers 2', 'ferry run sweep.yaml --out runs/study --no-nats --serve');
}
