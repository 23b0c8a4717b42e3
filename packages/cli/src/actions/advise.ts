import path from 'node:path';
import { DEFAULT_ADVISE, adviseDataset, selectBackend, type ColorMode, type DatasetAdvice } from '@ferry/core';
import { adviceLines } from '@ferry/common';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { ProgressLine, err, out, type CliIo } from '../io.js';
import { defaultCacheDir } from '../paths.js';
import { weightsChoice } from '../weights-choice.js';

export interface AdviseOptions {
  readonly data: string;
  readonly model: string;
  readonly weights?: string;
  readonly color: string;
  readonly size: number;
  readonly holdOut: number;
  readonly k: number;
  readonly perClass: number;
  readonly valFraction?: number;
  readonly seed: number;
  readonly backend: string;
  readonly threads?: number;
  readonly json: boolean;
}

const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;

/** `ferry advise`: measures the dataset with the frozen backbone, then prints the rule's advice. */
export async function adviseCommand(o: AdviseOptions, io: CliIo): Promise<number> {
  const weights = weightsChoice(o.weights, o.model, io);
  const backend = await selectBackend(backendRequest(o.backend), backendOptionsFromEnv(io));
  err(
    io,
    `ferry advise: ${o.model} (${weights ? path.basename(weights) : 'random weights'}) ${o.color} ${o.size}px on ${o.data}, backend ${backend.name} (${backend.device})`,
  );
  if (!weights)
    err(
      io,
      'warning: no weights: the features are those of a random network and the BatchNorm shift compares with the initial statistics (mean 0, variance 1); the advice means little',
    );
  const progress = new ProgressLine(io);
  const started = performance.now();
  const result = await adviseDataset(
    {
      ...DEFAULT_ADVISE,
      dataset: o.data,
      ...(o.valFraction !== undefined ? { valFraction: o.valFraction } : {}),
      model: o.model,
      weights,
      color: o.color as ColorMode,
      imageSize: o.size,
      holdOutFraction: o.holdOut,
      k: o.k,
      maxPerClass: o.perClass,
      seed: o.seed,
    },
    {
      cacheDir: path.join(defaultCacheDir(io), 'features'),
      backend,
      ...(o.threads !== undefined ? { decodeThreads: o.threads } : {}),
      onWarning: (m) => err(io, `warning: ${m}`),
      onProgress: (done, total) => {
        const s = (performance.now() - started) / 1000;
        progress.update(total ? done / total : 0, `frozen features: ${done}/${total} images, ${s.toFixed(0)}s`);
      },
    },
  );
  if (o.json) out(io, JSON.stringify(result));
  else printAdvice(result, io);
  return 0;
}

function printAdvice(r: DatasetAdvice, io: CliIo): void {
  const f = r.frozen;
  const ipc = r.imagesPerClass;
  const measured = r.measuredImages === r.trainImages ? '' : ` (${r.measuredImages} through the backbone)`;
  out(io, `dataset: ${r.classes.length} classes, ${r.trainImages} training images${measured}`);
  out(io, `  images per class: min ${ipc.min}, median ${ipc.median}, max ${ipc.max}`);
  out(
    io,
    `  frozen features, ${f.heldOutImages} held-out images (fitted on ${f.fitImages}): nearest centroid ${pct(f.nearestCentroid)}, ${f.k}-NN ${pct(f.knn)} (chance ${pct(f.chance)})`,
  );
  const top = [...r.domain.layers].sort((a, b) => b.shift - a.shift).slice(0, 3);
  out(
    io,
    `  BatchNorm shift from the source domain: ${r.domain.shift.toFixed(3)} (${r.domain.level}; most shifted: ${top.map((l) => `${l.name} ${l.shift.toFixed(2)}`).join(', ')})`,
  );
  out(
    io,
    `  features ${r.featureCache.hit ? 'from the cache' : 'computed and cached'} in ${(r.featureCache.ms / 1000).toFixed(1)}s; total ${(r.wallMs / 1000).toFixed(1)}s`,
  );
  out(io, 'reasoning (points added to the margin finetune minus freeze):');
  for (const line of adviceLines(r.advice)) out(io, line);
}
