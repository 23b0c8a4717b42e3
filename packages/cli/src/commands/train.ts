import type { Command } from 'commander';
import type { TrainOptions } from '../actions/train.js';
import { BACKEND_CHOICES, examples, int, num, type CommandContext } from '../kit.js';

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

/** `ferry train`: the defaults are DEFAULT_CELL's (a test holds them equal). */
export function trainDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('train')
    .description("one training run (the study script's flags): -d DATASET -m MODEL -f 1|0 ...")
    .requiredOption('-d, --data <DATASET>', 'the dataset folder (train/ and val/, or class folders)')
    .option('-m, --model <model>', 'a model of `ferry models`', 'resnet18')
    .option('-b, --batch <n>', 'batch size', int('batch', 1), 32)
    .option('-e, --epochs <n>', 'epochs', int('epochs', 1), 15)
    .option('--lr <lr>', "learning rate (the study's -lr)", num('lr'), 0.001)
    .option('--lr-gamma <gamma>', "step decay factor (the study's -lrs)", num('lr-gamma'), 0.1)
    .option('--lr-step <epochs>', "epochs between decays (the study's -lre)", int('lr-step', 0), 7)
    .option('--momentum <m>', "SGD momentum (the study's -mm)", num('momentum'), 0.9)
    .option('-f, --finetune <1|0>', "1: finetune, 0: freeze (the study script's flag; or --strategy)")
    .option('--strategy <strategy>', 'finetune, freeze, probe, adapt or freezeUntil:STAGE (default: finetune)')
    .option('--color <mode>', 'rgb or gray', 'rgb')
    .option('--weights <file|pretrained|none>', 'initial weights (default: pretrained when the model has them)')
    .option('--size <px>', 'image size', int('size', 16), 224)
    .option('--val-fraction <f>', 'split class folders: this share for val', num('val-fraction'))
    .option('--wd <wd>', 'weight decay', num('wd'), 0)
    .option('--seed <n>', 'seed (initialisation, shuffling, augmentation)', int('seed', 0), 0)
    .option('--views <k>', 'augmented views per image (feature cache)', int('views', 0), 1)
    .option('--micro-batch <n>', 'accumulate gradients over micro-batches of n (0: off)', int('micro-batch', 0), 0)
    .option('--no-cache', 'do not cache frozen features')
    .option('--backend <backend>', BACKEND_CHOICES, 'auto')
    .option('--threads <n>', 'image decode threads (default: one per CPU)', int('threads', 1))
    .option('--out <dir>', 'output folder (default: runs/<dataset>-<model>-<color>-<strategy>-s<seed>)')
    .option('--json', 'print the result as JSON', false)
    .action(async () => {
      const { trainCommand } = await import('../actions/train.js');
      ctx.code = await trainCommand(cmd.opts<TrainOptions>(), ctx.io);
    });
  examples(
    cmd,
    'ferry train -d data/hymenoptera -m resnet18 -f 0 -e 5',
    'ferry train -d data/demo -m resnet_tiny --strategy probe --color gray -lr 0.01 -lre 2',
  );
}
