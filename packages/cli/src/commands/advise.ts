import type { Command } from 'commander';
import type { AdviseOptions } from '../actions/advise.js';
import { BACKEND_CHOICES, examples, hyperOption, int, num, type CommandContext } from '../kit.js';

/** `ferry advise`: a heuristic prediction of finetune vs freeze from the frozen backbone's features. */
export function adviseDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('advise')
    .description('predict finetune vs freeze before training (a heuristic, from the frozen features)')
    .requiredOption('-d, --data <DATASET>', 'the dataset folder (train/ and val/, or class folders): train/ is read')
    .option('-m, --model <model>', 'a model of `ferry models`', 'resnet18')
    .option('--weights <file|pretrained|none>', 'the backbone (default: pretrained when the model has them)')
    .option('--color <mode>', 'rgb or gray', 'rgb');
  hyperOption(cmd, 'imageSize');
  cmd
    .option(
      '--hold-out <f>',
      "share of each class's training images held out to score the features",
      num('hold-out'),
      0.25,
    )
    .option(
      '--per-class <n>',
      'at most this many training images per class through the backbone (a seeded sample; 0: all, whose features probe cells share)',
      int('per-class', 0),
      0,
    )
    .option('--k <n>', 'neighbours of the k-NN classifier', int('k', 1), 5)
    .option('--val-fraction <f>', 'split class folders: this share for val (not read)', num('val-fraction'))
    .option(
      '--seed <n>',
      'seed of the held-out split (a probe cell of this seed shares the features)',
      int('seed', 0),
      0,
    )
    .option('--backend <backend>', BACKEND_CHOICES, 'auto')
    .option('--threads <n>', 'image decode threads (default: one per CPU)', int('threads', 1))
    .option('--json', 'print the measurements and the advice as JSON', false)
    .action(async () => {
      const { adviseCommand } = await import('../actions/advise.js');
      ctx.code = await adviseCommand(cmd.opts<AdviseOptions>(), ctx.io);
    });
  examples(
    cmd,
    'ferry advise -d data/hymenoptera -m resnet18',
    'ferry advise -d data/demo -m resnet_tiny --weights runs/source/best.safetensors --size 64 --color gray --json',
  );
}
