import { existsSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, getZooEntry } from '@ferry/core';
import type { CliIo } from './io.js';
import { defaultCacheDir } from './paths.js';

/**
 * The weights file a `--weights <file|pretrained|none>` flag names for `model` (null: random
 * initialisation); without the flag, the model's pretrained weights where it has them (they must
 * be in the cache: `ferry weights pull`), else none.
 */
export function weightsChoice(flag: string | undefined, model: string, io: CliIo): string | null {
  const entry = getZooEntry(model);
  const choice = flag ?? (entry.weights ? 'pretrained' : 'none');
  if (choice === 'none') return null;
  if (choice !== 'pretrained') {
    if (!existsSync(choice)) throw new InvalidArgumentError(`--weights ${choice}: no such file`);
    return choice;
  }
  if (!entry.weights)
    throw new InvalidArgumentError(`${model} has no pretrained weights; pass --weights FILE or --weights none`);
  const file = path.join(defaultCacheDir(io), 'weights', entry.weights.fileName);
  if (!existsSync(file)) {
    throw new InvalidArgumentError(
      `pretrained ${model} weights are not in the cache (${file}); run \`ferry weights pull ${model}\`, or pass --weights FILE or --weights none`,
    );
  }
  return file;
}
