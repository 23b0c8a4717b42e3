import type { Command } from 'commander';
import type { PredictOptions } from '../actions/predict.js';
import { BACKEND_CHOICES, examples, int, type CommandContext } from '../kit.js';

/** `ferry predict`. */
export function predictDefinition(program: Command, ctx: CommandContext): void {
  const cmd = program
    .command('predict')
    .description('logits of an NCHW .npy (--input) or top-k classes of an image (--image)')
    .requiredOption('--model <model>', 'a model of `ferry models`')
    .requiredOption('--weights <file>', 'weights: .pth, .safetensors or a ferry checkpoint')
    .option('--input <X.npy>', 'a float32 NCHW array, already normalised: prints its logits')
    .option('--image <file>', 'an image: the val transform, then the top classes')
    .option('--classes <n>', "classifier size (default: the weights' classifier)", int('classes', 1))
    .option('--labels <file>', 'class names, one a line')
    .option('--top <k>', 'how many classes to print', int('top', 1), 5)
    .option('--size <px>', 'the crop size of the val transform', int('size', 8), 224)
    .option('--gray', 'the image in grayscale (three equal channels)', false)
    .option('--backend <backend>', BACKEND_CHOICES, 'auto')
    .option('--json', 'JSON output', false)
    .action(async () => {
      const { predictCommand } = await import('../actions/predict.js');
      ctx.code = await predictCommand(cmd.opts<PredictOptions>(), ctx.io);
    });
  examples(
    cmd,
    'ferry predict --model resnet18 --weights resnet18.pth --image photo.jpg --top 3',
    'ferry predict --model resnet18 --weights resnet18.pth --input x.npy --json',
  );
}
