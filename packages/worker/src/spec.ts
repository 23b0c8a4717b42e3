import { existsSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, getZooEntry, type CellConfig } from '@ferry/core';
import { sourceCellOf, startsFromScratch, trainingHyperParameters, type CellSpec } from '@ferry/common';

/**
 * A cell as the coordinator sends it (parsed: parseCellSpec) -> the engine's configuration, paths
 * under this worker's data root; a cell of a later stage (weights `cell:<id>`) reads its source's
 * best weights from `sourceWeights`, where the worker fetched them (@ferry/client's
 * fetchSourceWeights).
 */
export function cellConfigFromSpec(
  spec: CellSpec,
  dataRoot: string,
  cacheDir: string,
  sourceWeights?: string,
): CellConfig {
  let weights: string | null = null;
  const source = sourceCellOf(spec.weights);
  if (startsFromScratch(spec.strategy)) weights = null;
  else if (source !== null) {
    if (!sourceWeights) throw new InvalidArgumentError(`the best weights of source cell ${source} were not fetched`);
    weights = sourceWeights;
  } else if (spec.weights === 'pretrained') {
    const src = getZooEntry(spec.model).weights;
    if (!src) throw new InvalidArgumentError(`${spec.model} has no pretrained weights; set weights: none`);
    weights = path.join(cacheDir, 'weights', src.fileName);
    if (!existsSync(weights))
      throw new InvalidArgumentError(
        `pretrained ${spec.model} weights are not on this worker (${weights}); run \`ferry weights pull ${spec.model}\``,
      );
  } else if (spec.weights !== 'none') weights = path.resolve(dataRoot, spec.weights);
  return {
    ...trainingHyperParameters(spec),
    dataset: path.resolve(dataRoot, spec.path),
    ...(spec.valFraction !== null ? { valFraction: spec.valFraction } : {}),
    model: spec.model,
    weights,
    color: spec.color,
    strategy: spec.strategy,
    seed: spec.seed,
  };
}
