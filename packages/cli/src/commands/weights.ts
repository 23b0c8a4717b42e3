import type { Command } from 'commander';
import type { WeightsPullOptions } from '../actions/weights.js';
import { examples, type CommandContext } from '../kit.js';

/** `ferry weights pull MODEL`. */
export function weightsDefinition(program: Command, ctx: CommandContext): void {
  const weights = program
    .command('weights')
    .description('download official torchvision weights (SHA-256 checked, resumable)');
  examples(weights, 'ferry weights pull resnet18');
  const pull = weights
    .command('pull')
    .description("download a model's official weights into the cache (resumes an interrupted download)")
    .argument('<MODEL>', 'a model of `ferry models`')
    .option('--cache <dir>', 'the cache folder (default: FERRY_CACHE, else ~/.cache/ferry)')
    .option('--url <url>', 'download from here instead (needs --sha256)')
    .option('--sha256 <hex>', "the file's SHA-256")
    .action(async (model: string) => {
      const { weightsPull } = await import('../actions/weights.js');
      ctx.code = await weightsPull(model, pull.opts<WeightsPullOptions>(), ctx.io);
    });
  examples(
    pull,
    'ferry weights pull resnet18',
    'ferry weights pull mobilenet_v2 --url https://host/m.pth --sha256 HEX',
  );
}
