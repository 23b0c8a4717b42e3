import type { Command } from 'commander';
import type { ModelsOptions } from '../actions/models.js';
import { examples, type CommandContext } from '../kit.js';

/** `ferry models`. */
export function modelsDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('models')
    .description('the model zoo: parameter counts, stages, default weights')
    .option('--json', 'the zoo as JSON', false)
    .action(async () => {
      const { modelsCommand } = await import('../actions/models.js');
      ctx.code = modelsCommand(cmd.opts<ModelsOptions>(), ctx.io);
    });
  examples(cmd, 'ferry models', 'ferry models --json');
}
