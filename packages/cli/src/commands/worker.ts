import path from 'node:path';
import type { Command } from 'commander';
import type { WorkerFlags } from '../actions/worker.js';
import { BACKEND_CHOICES, connectionFlags, examples, int, withConnection, type CommandContext } from '../kit.js';

/** `ferry worker`. */
export function workerDefinition(program: Command, ctx: CommandContext): void {
  const cmd = connectionFlags(
    program.command('worker').description('a worker (one per GPU; --gpus all starts one per GPU)'),
  )
    .option('--data-root <dir>', "where the sweeps' dataset paths are", 'data')
    .option('--work-dir <dir>', 'checkpoints, heartbeat and the claimed attempt', path.join('.ferry', 'worker'))
    .option('--backend <backend>', BACKEND_CHOICES, 'auto')
    .option('--gpus <all>', 'start one worker per GPU (CUDA_VISIBLE_DEVICES pins each)')
    .option('--name <name>', 'the name the coordinator shows (default: host and process)')
    .option('--threads <n>', 'image decode threads (default: one per CPU)', int('threads', 1))
    .option('--poll-ms <ms>', 'how long a request for work waits', int('poll-ms', 100), 10_000)
    .option('--nats <url>', 'publish step progress to NATS (default: FERRY_NATS)')
    .option('--peer-host <host>', 'data-parallel cells: serve peers on this address')
    .option('--insecure-peer', 'peer traffic without TLS on a non-loopback --peer-host', false)
    .option('--peer-port <n>', 'the peer port (0: any free one)', int('peer-port', 0), 0)
    .option('--peer-advertise <host>', 'the address peers dial (default: --peer-host)')
    .option(
      '--give-up-after-ms <ms>',
      'exit when the coordinator has not answered for this long (a batch job whose run is gone; default: retry for ever)',
      int('give-up-after-ms', 1000),
    )
    .option(
      '--collective-deadline-ms <ms>',
      'a lost peer aborts the group within this',
      int('collective-deadline-ms', 100),
      60_000,
    )
    .action(async () => {
      const { workerCommand } = await import('../actions/worker.js');
      const rest = ctx.argv.slice(ctx.argv.indexOf('worker') + 1);
      ctx.code = await workerCommand(withConnection<WorkerFlags>(cmd), rest, ctx.io);
    });
  examples(
    cmd,
    'ferry worker --coordinator 10.0.0.5:7070 --token SECRET --tls-ca ca.pem --gpus all',
    'ferry worker --coordinator 127.0.0.1:7070 --backend wasm --data-root /srv/data',
  );
}
