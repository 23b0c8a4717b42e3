import type { Command } from 'commander';
import { STRATEGY_HINT } from '@ferry/common';
import type { TrainOptions } from '../actions/train.js';
import { BACKEND_CHOICES, examples, hyperOption, int, num, trainingFromFlags, type CommandContext } from '../kit.js';

/** The study script's flags of more than one letter, as ferry's long ones (a short flag has one letter). */
const STUDY_FLAGS: Readonly<Record<string, string>> = {
  '-lr': '--lr',
  '-lrs': '--lr-gamma',
  '-lre': '--lr-step',
  '-mm': '--momentum',
};

/** `ferry train`'s arguments with the study script's -lr, -lrs, -lre and -mm spelled as ferry's. */
export function studyFlags(argv: readonly string[]): string[] {
  return argv.map((a) => STUDY_FLAGS[a] ?? a);
}

/** `ferry train`: the hyper-parameters' flags, defaults and ranges are the cell specification's (HYPER_PARAMETERS). */
export function trainDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('train')
    .description("one training run (the study script's flags): -d DATASET -m MODEL -f 1|0 ...")
    .requiredOption('-d, --data <DATASET>', 'the dataset folder (train/ and val/, or class folders)')
    .option('-m, --model <model>', 'a model of `ferry models`', 'resnet18');
  // The hyper-parameters: flags, descriptions, defaults and ranges from the cell specification.
  hyperOption(cmd, 'batchSize', '-b');
  hyperOption(cmd, 'epochs', '-e');
  hyperOption(cmd, 'lr', undefined, " (the study's -lr)");
  hyperOption(cmd, 'lrGamma', undefined, " (the study's -lrs)");
  hyperOption(cmd, 'lrStepEpochs', undefined, " (the study's -lre)");
  hyperOption(cmd, 'momentum', undefined, " (the study's -mm)");
  hyperOption(cmd, 'weightDecay');
  hyperOption(cmd, 'imageSize');
  hyperOption(cmd, 'augmentViews');
  hyperOption(cmd, 'microBatch');
  hyperOption(cmd, 'featureCache');
  cmd
    .option('-f, --finetune <1|0>', "1: finetune, 0: freeze (the study script's flag; or --strategy)")
    .option('--strategy <strategy>', `${STRATEGY_HINT.replace(/^use /, '')} (default: finetune)`)
    .option('--color <mode>', 'rgb or gray', 'rgb')
    .option('--weights <file|pretrained|none>', 'initial weights (default: pretrained when the model has them)')
    .option('--val-fraction <f>', 'split class folders: this share for val', num('val-fraction'))
    .option('--seed <n>', 'seed (initialisation, shuffling, augmentation)', int('seed', 0), 0)
    .option('--backend <backend>', BACKEND_CHOICES, 'auto')
    .option('--threads <n>', 'image decode threads (default: one per CPU)', int('threads', 1))
    .option('--out <dir>', 'output folder (default: runs/<dataset>-<model>-<color>-<strategy>-s<seed>)')
    .option('--json', 'print the result as JSON', false)
    .action(async () => {
      const { trainCommand } = await import('../actions/train.js');
      ctx.code = await trainCommand(
        { ...cmd.opts<Omit<TrainOptions, 'hyper'>>(), hyper: trainingFromFlags(cmd) },
        ctx.io,
      );
    });
  examples(
    cmd,
    'ferry train -d data/hymenoptera -m resnet18 -f 0 -e 5',
    'ferry train -d data/demo -m resnet_tiny --strategy probe --color gray -lr 0.01 -lre 2',
  );
}
