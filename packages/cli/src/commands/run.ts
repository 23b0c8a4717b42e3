import { DEFAULT_ALPHA } from '@ferry/common';
import type { Command } from 'commander';
import type { RunFlags } from '../actions/run.js';
import { BACKEND_CHOICES, alpha, examples, given, int, type CommandContext } from '../kit.js';

/** `ferry run SWEEP.yaml`. */
export function runDefinition(program: Command, ctx: CommandContext): void {
  const cmd = slurmOptions(
    program
      .command('run')
      .description(
        'the embedded default: coordinator + N local workers, supervised; the sweep, the results table and report',
      )
      .argument('<SWEEP.yaml>', 'the sweep file')
      .option('--workers <n>', 'local workers', int('workers', 1), 1)
      .option('--data-root <dir>', "where the sweep's dataset paths are", 'data')
      .option('--out <dir>', 'results, logs, coordinator state and checkpoints (default: runs/<sweep name>)')
      .option('--backend <backend>', BACKEND_CHOICES, 'auto')
      .option(
        '--nats <url>',
        "a NATS server for live events (default: FERRY_NATS, else a nats-server of the run's own)",
      )
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
      ),
  ).action(async (file: string) => {
    const { runCommand } = await import('../actions/run.js');
    ctx.code = await runCommand(file, { ...cmd.opts<RunFlags>(), workersGiven: given(cmd, 'workers') }, ctx.io);
  });
  examples(
    cmd,
    'ferry run examples/demo.yaml --workers 2',
    'ferry run sweep.yaml --out runs/study --no-nats --serve',
    'ferry run sweep.yaml --slurm 4 --partition gpu --time 4:00:00 --tls-cert coord.pem --tls-key coord.key',
  );
}

/** `ferry run --slurm N`'s flags: the workers as jobs of the cluster's scheduler (docs/operations.md, Slurm). */
function slurmOptions(cmd: Command): Command {
  return cmd
    .option(
      '--slurm <jobs>',
      'run the workers as this many Slurm jobs (one sbatch array) instead of local processes',
      int('slurm', 1),
    )
    .option('--partition <name>', "the jobs' partition (sbatch --partition)")
    .option('--account <name>', 'the account the jobs are charged to')
    .option('--qos <name>', "the jobs' quality of service")
    .option(
      '--time <limit>',
      "each job's time limit (sbatch's form: minutes, HH:MM:SS, D-HH:MM); a job that reaches it is replaced",
    )
    .option(
      '--gres <gres>',
      "each job's generic resources (default: gpu:1 where the partition's nodes have GPUs; none: CPUs only)",
    )
    .option(
      '--cpus-per-job <n>',
      "each job's CPUs (its engine's threads and image decoding)",
      int('cpus-per-job', 1),
      2,
    )
    .option(
      '--sbatch <flag>',
      'one more sbatch flag, repeatable: --sbatch=--constraint=a100',
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option(
      '--max-submissions <n>',
      'jobs submitted in all, replacements included (default: 3 x --slurm)',
      int('max-submissions', 1),
    )
    .option(
      '--signal-seconds <s>',
      'SIGTERM this long before the time limit: the worker gives its cell back in time',
      int('signal-seconds', 10),
      120,
    )
    .option(
      '--listen <host:port>',
      "with --slurm: the coordinator's address (default 0.0.0.0:0: the jobs run on other nodes)",
    )
    .option('--advertise <host>', "with --slurm: the host the jobs dial (default: this machine's name)")
    .option('--tls-cert <file>', "with --slurm: the coordinator's TLS certificate (with --tls-key)")
    .option('--tls-key <file>', "the certificate's key")
    .option('--tls-ca <file>', "the CA the jobs check the coordinator's certificate with (default: --tls-cert)")
    .option('--insecure', 'with --slurm: a coordinator off loopback without TLS (the token still required)', false);
}
