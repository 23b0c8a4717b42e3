import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  DEFAULT_CELL,
  InvalidArgumentError,
  getZooEntry,
  runCell,
  selectBackend,
  type CellConfig,
  type ColorMode,
} from '@ferry/core';
import { strategyLegend } from '@ferry/common';
import { Args } from '../args.js';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { ProgressLine, err, out, table, type CliIo } from '../io.js';
import { curvesSvg } from '../svg.js';
import { defaultCacheDir } from './weights.js';

export const USAGE = `ferry train -d DATASET [-m MODEL] [-b BATCH] [-e EPOCHS] [-lr LR] [-lrs GAMMA] [-lre STEP] [-mm MOMENTUM]
                   [-f 1|0 | --strategy finetune|freeze|probe|adapt|freezeUntil:STAGE] [--color rgb|gray] [--weights FILE|pretrained|none]
                   [--size 224] [--val-fraction F] [--wd WD] [--seed S] [--views K] [--micro-batch N] [--no-cache] [--backend B] [--threads N] [--out DIR] [--json]`;

/** The study script's short flags, mapped to ferry's long ones (node's parser takes 1-letter shorts only). */
const STUDY_FLAGS: Readonly<Record<string, string>> = {
  '-d': '--data',
  '-b': '--batch',
  '-m': '--model',
  '-lr': '--lr',
  '-lrs': '--lr-gamma',
  '-lre': '--lr-step',
  '-mm': '--momentum',
  '-e': '--epochs',
  '-f': '--finetune',
};

export function normaliseStudyFlags(argv: readonly string[]): string[] {
  return argv.map((a) => STUDY_FLAGS[a] ?? a);
}

function resolveWeights(flag: string | undefined, model: string, io: CliIo): string | null {
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

const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;

/** `ferry train`: one cell, no cluster, the study script's flags. */
export async function trainCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(
    normaliseStudyFlags(argv),
    {
      data: { type: 'string' },
      batch: { type: 'string' },
      model: { type: 'string' },
      lr: { type: 'string' },
      'lr-gamma': { type: 'string' },
      'lr-step': { type: 'string' },
      momentum: { type: 'string' },
      epochs: { type: 'string' },
      finetune: { type: 'string' },
      strategy: { type: 'string' },
      color: { type: 'string' },
      weights: { type: 'string' },
      size: { type: 'string' },
      'val-fraction': { type: 'string' },
      wd: { type: 'string' },
      seed: { type: 'string' },
      views: { type: 'string' },
      'micro-batch': { type: 'string' },
      'no-cache': { type: 'boolean' },
      backend: { type: 'string' },
      threads: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
    },
    USAGE,
  );
  const dataset = args.required('data');
  const model = args.string('model') ?? 'resnet18';
  getZooEntry(model);
  const f = args.string('finetune');
  if (f !== undefined && f !== '0' && f !== '1')
    throw new InvalidArgumentError(`-f must be 1 (finetune) or 0 (freeze), got "${f}"`);
  if (f !== undefined && args.string('strategy') !== undefined)
    throw new InvalidArgumentError('give -f or --strategy, not both');
  const strategy = args.string('strategy') ?? (f === '0' ? 'freeze' : 'finetune');
  const color = (args.string('color') ?? 'rgb') as ColorMode;
  const valFraction = args.string('val-fraction');
  const config: CellConfig = {
    ...DEFAULT_CELL,
    dataset,
    ...(valFraction !== undefined ? { valFraction: args.number('val-fraction', 0.2) } : {}),
    model,
    weights: resolveWeights(args.string('weights'), model, io),
    color,
    strategy,
    epochs: args.int('epochs', DEFAULT_CELL.epochs, 1),
    batchSize: args.int('batch', DEFAULT_CELL.batchSize, 1),
    lr: args.number('lr', DEFAULT_CELL.lr),
    momentum: args.number('momentum', DEFAULT_CELL.momentum),
    weightDecay: args.number('wd', DEFAULT_CELL.weightDecay),
    lrStepEpochs: args.int('lr-step', DEFAULT_CELL.lrStepEpochs, 0),
    lrGamma: args.number('lr-gamma', DEFAULT_CELL.lrGamma),
    seed: args.int('seed', DEFAULT_CELL.seed, 0),
    imageSize: args.int('size', DEFAULT_CELL.imageSize, 16),
    featureCache: !args.flag('no-cache'),
    augmentViews: args.int('views', DEFAULT_CELL.augmentViews, 0),
    microBatch: args.int('micro-batch', DEFAULT_CELL.microBatch, 0),
  };
  const outDir =
    args.string('out') ??
    path.join(
      'runs',
      `${path.basename(path.resolve(dataset))}-${model}-${color}-${strategy.replace(':', '-')}-s${config.seed}`,
    );
  const backend = await selectBackend(backendRequest(args.string('backend')), backendOptionsFromEnv(io));
  err(
    io,
    `ferry train: ${model} ${strategy} ${color} on ${dataset}, ${config.epochs} epochs, backend ${backend.name} (${backend.device}), output ${outDir}`,
  );
  err(io, `  ${strategyLegend([strategy])[0]}`);
  const progress = new ProgressLine(io);
  const rows: string[][] = [
    ['EPOCH', 'LR', 'TRAIN LOSS', 'TRAIN ACC', 'VAL LOSS', 'VAL ACC', 'IMG/S', 'DATA WAIT', 'TIME'],
  ];
  const result = await runCell(config, {
    outDir,
    cacheDir: path.join(defaultCacheDir(io), 'features'),
    backend,
    ...(args.string('threads') ? { decodeThreads: args.int('threads', 1, 1) } : {}),
    onWarning: (m) => err(io, `warning: ${m}`),
    onProgress: (p) => {
      if (p.type === 'step') {
        const done = (p.epoch * p.stepsPerEpoch + p.step) / (config.epochs * p.stepsPerEpoch);
        progress.update(
          done,
          `epoch ${p.epoch + 1}/${config.epochs} step ${p.step}/${p.stepsPerEpoch} loss ${p.loss.toFixed(3)} ${p.imagesPerSec.toFixed(1)} img/s ETA ${Math.ceil(p.etaMs / 1000)}s`,
        );
      } else if (p.type === 'features') {
        progress.update(p.total ? p.done / p.total : 0, `features ${p.split}: ${p.done}/${p.total}`);
      } else if (p.type === 'epoch') {
        const m = p.metrics;
        const row = [
          `${m.epoch + 1}${p.best ? '*' : ''}`,
          m.lr.toPrecision(3),
          m.trainLoss.toFixed(4),
          pct(m.trainAccuracy),
          m.valLoss.toFixed(4),
          pct(m.valAccuracy),
          m.imagesPerSec.toFixed(1),
          `${(m.dataWaitMs / 1000).toFixed(1)}s`,
          `${((m.trainMs + m.valMs) / 1000).toFixed(1)}s`,
        ];
        rows.push(row);
        progress.done(`epoch ${row[0]}: train ${row[3]} val ${row[5]} (loss ${row[4]})`);
      }
    },
  });
  await mkdir(outDir, { recursive: true });
  await writeFile(path.join(outDir, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(
    path.join(outDir, 'curves.svg'),
    curvesSvg(
      `${model} ${strategy} ${color}: best val ${pct(result.bestValAccuracy)}`,
      result.epochs,
      result.bestEpoch,
    ),
  );
  if (args.flag('json')) {
    out(io, JSON.stringify(result));
    return 0;
  }
  out(io, table(rows));
  out(io);
  out(
    io,
    `best val accuracy ${pct(result.bestValAccuracy)} at epoch ${result.bestEpoch + 1} (* marks improvements); ${result.trainImages} train / ${result.valImages} val images, ${result.skipped.length} skipped`,
  );
  out(io, `per class: ${result.classes.map((c, i) => `${c} ${pct(result.perClassAccuracy[i] ?? 0)}`).join(', ')}`);
  out(
    io,
    `wall ${(result.wallMs / 1000).toFixed(1)}s, ${result.imagesPerSec.toFixed(1)} img/s${result.featureCache.used ? `, feature cache ${result.featureCache.hits} hit(s) ${result.featureCache.misses} miss(es)` : ''}`,
  );
  out(
    io,
    `wrote ${path.join(outDir, 'result.json')}, ${path.join(outDir, 'curves.svg')}, checkpoints last/best.safetensors`,
  );
  return 0;
}
