import type { Command } from 'commander';
import type { InfoOptions } from '../actions/info.js';
import { BACKEND_CHOICES, examples, type CommandContext } from '../kit.js';

/** `ferry info`. */
export function infoDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('info')
    .description('backend chosen, the others and why they are unavailable, GPUs, versions')
    .option('--backend <backend>', `the backend to choose: ${BACKEND_CHOICES}`, 'auto')
    .option('--json', 'the report as JSON', false)
    .action(async () => {
      const { infoCommand } = await import('../actions/info.js');
      ctx.code = await infoCommand(cmd.opts<InfoOptions>(), ctx.io);
    });
  examples(cmd, 'ferry info', 'ferry info --backend webgpu --json');
}
