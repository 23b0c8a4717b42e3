import path from 'node:path';
import type { Command } from 'commander';
import type { CoordinatorFlags } from '../actions/coordinator.js';
import { examples, int, type CommandContext } from '../kit.js';

/** `ferry coordinator`: the defaults are the coordinator's own. */
export function coordinatorDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('coordinator')
    .description("the cluster's coordinator (gRPC, SQLite state)")
    .option('--listen <host:port>', 'where to serve gRPC (port 0: any free one)', '127.0.0.1:7070')
    .option('--state <dir>', 'the SQLite state and checkpoints', path.join('.ferry', 'coordinator'))
    .option('--token <token>', 'required of every client (default: FERRY_TOKEN)')
    .option('--token-file <file>', 'read the token from this file, readable only by you (not shown by ps)')
    .option('--tls-cert <file>', "the server's certificate (with --tls-key)")
    .option('--tls-key <file>', "the certificate's key")
    .option('--tls-ca <file>', 'require client certificates signed by this CA')
    .option('--insecure', 'listen on a non-loopback address without a token or TLS', false)
    .option('--lease-ms <ms>', "a worker's lease on its cell", int('lease-ms', 100), 30_000)
    .option('--heartbeat-ms <ms>', 'how often workers report', int('heartbeat-ms', 10), 2_000)
    .option('--max-attempts <n>', 'attempts per cell (a sweep may set its own)', int('max-attempts', 1), 3)
    .option('--max-checkpoint-mb <mb>', 'the largest checkpoint accepted', int('max-checkpoint-mb', 1), 4096)
    .option(
      '--checkpoint-idle-ms <ms>',
      'a checkpoint upload idle this long is cut',
      int('checkpoint-idle-ms', 100),
      60_000,
    )
    .option(
      '--recovery-grace-ms <ms>',
      'after a restart, how long workers have to reclaim their cells',
      int('recovery-grace-ms', 0),
      20_000,
    )
    .option('--nats <url>', 'publish events to NATS JetStream (default: FERRY_NATS)')
    .action(async () => {
      const { coordinatorCommand } = await import('../actions/coordinator.js');
      ctx.code = await coordinatorCommand(cmd.opts<CoordinatorFlags>(), ctx.io);
    });
  examples(
    cmd,
    'ferry coordinator --listen 0.0.0.0:7070 --token SECRET --tls-cert server.pem --tls-key server.key',
    'ferry coordinator --state /var/lib/ferry --nats nats://127.0.0.1:4222',
  );
}
