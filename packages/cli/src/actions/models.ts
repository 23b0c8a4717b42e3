import { buildModel, countParams, listModels } from '@ferry/core';
import { out, table, type CliIo } from '../io.js';

export interface ModelsOptions {
  readonly json: boolean;
}

/** The model zoo with parameter counts (1000 classes) and default weight sources. */
export function modelsCommand(opts: ModelsOptions, io: CliIo): number {
  const rows = listModels().map((m) => {
    const def = buildModel(m.name, 1000);
    return {
      name: m.name,
      parameters: countParams(def, true),
      stages: def.stages.map((s) => s.name),
      weights: m.weights?.url ?? null,
      description: m.description,
    };
  });
  if (opts.json) {
    out(io, JSON.stringify(rows, null, 2));
    return 0;
  }
  out(
    io,
    table([
      ['MODEL', 'PARAMS (1000 cls)', 'DEFAULT WEIGHTS', 'DESCRIPTION'],
      ...rows.map((r) => [
        r.name,
        r.parameters.toLocaleString('en-US'),
        r.weights ?? '(none: random init)',
        r.description,
      ]),
    ]),
  );
  return 0;
}
