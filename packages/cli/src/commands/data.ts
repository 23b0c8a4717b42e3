import { InvalidArgumentError, writeDemoDataset } from '@ferry/core';
import { Args } from '../args.js';
import { out, type CliIo } from '../io.js';

const USAGE = 'ferry data <demo> ...\n  ferry data demo DEST [--train-per-class N] [--val-per-class N] [--size PX] [--seed S]';

/** `ferry data`: dataset tools. */
export async function dataCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'demo': {
      const args = Args.parse(
        rest,
        { 'train-per-class': { type: 'string' }, 'val-per-class': { type: 'string' }, size: { type: 'string' }, seed: { type: 'string' } },
        USAGE,
      );
      const dest = args.positionals[0];
      if (!dest) throw new InvalidArgumentError(`where to? usage: ${USAGE}`);
      const r = await writeDemoDataset(dest, {
        trainPerClass: args.int('train-per-class', 100, 1),
        valPerClass: args.int('val-per-class', 25, 1),
        size: args.int('size', 64, 16),
        seed: args.int('seed', 0, 0),
      });
      out(io, `wrote ${r.images} images to ${dest} (train/ and val/, 4 classes)`);
      return 0;
    }
    default:
      throw new InvalidArgumentError(`unknown data command "${sub ?? ''}"\nusage: ${USAGE}`);
  }
}
