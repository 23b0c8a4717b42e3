import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  InvalidArgumentError,
  getZooEntry,
  runCell,
  selectBackend,
  DEFAULT_CELL,
  type CellConfig,
  type CellResult,
  type CellRunOptions,
} from '@ferry/core';
import { strategyLegend, type TrainingHyperParameters } from '@ferry/common';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { ProgressLine, err, out, table, type CliIo } from '../io.js';
import { defaultCacheDir } from '../paths.js';
import { curvesHtml } from '../report.js';
import { weightsChoice } from '../weights-choice.js';

export interface TrainOptions {
  readonly data: string;
  readonly model: string;
  /** The hyper-parameters from their flags (the cell specification's table: kit.ts's trainingFromFlags). */
  readonly hyper: TrainingHyperParameters;
  readonly finetune?: string;
  readonly strategy?: string;
  readonly color: string;
  readonly weights?: string;
  readonly valFraction?: number;
  readonly seed: number;
  readonly backend: string;
  readonly threads?: number;
  readonly out?: string;
  readonly json: boolean;
}

const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;

/** The cell to train, from the flags (-f or --strategy, not both). */
function cellConfig(o: TrainOptions, io: CliIo): CellConfig {
  getZooEntry(o.model);
  const f = o.finetune;
  if (f !== undefined && f !== '0' && f !== '1')
    throw new InvalidArgumentError(`-f must be 1 (finetune) or 0 (freeze), got "${f}"`);
  if (f !== undefined && o.strategy !== undefined) throw new InvalidArgumentError('give -f or --strategy, not both');
  const color = o.color;
  if (color !== 'rgb' && color !== 'gray')
    throw new InvalidArgumentError(`--color must be rgb or gray, got "${color}"`);
  return {
    ...DEFAULT_CELL,
    ...o.hyper,
    dataset: o.data,
    ...(o.valFraction !== undefined ? { valFraction: o.valFraction } : {}),
    model: o.model,
    weights: weightsChoice(o.weights, o.model, io),
    color,
    strategy: o.strategy ?? (f === '0' ? 'freeze' : 'finetune'),
    seed: o.seed,
  };
}

type TrainingProgress = Parameters<NonNullable<CellRunOptions['onProgress']>>[0];

/** The progress bar and the per-epoch table as training reports its steps. */
class TrainView {
  readonly rows: string[][] = [
    ['EPOCH', 'LR', 'TRAIN LOSS', 'TRAIN ACC', 'VAL LOSS', 'VAL ACC', 'IMG/S', 'DATA WAIT', 'TIME'],
  ];
  private readonly progress: ProgressLine;

  constructor(
    io: CliIo,
    private readonly epochs: number,
  ) {
    this.progress = new ProgressLine(io);
  }

  onProgress(p: TrainingProgress): void {
    if (p.type === 'step') {
      const done = (p.epoch * p.stepsPerEpoch + p.step) / (this.epochs * p.stepsPerEpoch);
      this.progress.update(
        done,
        `epoch ${p.epoch + 1}/${this.epochs} step ${p.step}/${p.stepsPerEpoch} loss ${p.loss.toFixed(3)} ${p.imagesPerSec.toFixed(1)} img/s ETA ${Math.ceil(p.etaMs / 1000)}s`,
      );
    } else if (p.type === 'features') {
      this.progress.update(p.total ? p.done / p.total : 0, `features ${p.split}: ${p.done}/${p.total}`);
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
      this.rows.push(row);
      this.progress.done(`epoch ${row[0]}: train ${row[3]} val ${row[5]} (loss ${row[4]})`);
    }
  }
}

/** `ferry train`: one cell, no cluster, the study script's flags. */
export async function trainCommand(o: TrainOptions, io: CliIo): Promise<number> {
  const config = cellConfig(o, io);
  const { model, strategy, color, dataset } = config;
  const outDir =
    o.out ??
    path.join(
      'runs',
      `${path.basename(path.resolve(dataset))}-${model}-${color}-${strategy.replace(':', '-')}-s${config.seed}`,
    );
  const backend = await selectBackend(backendRequest(o.backend), backendOptionsFromEnv(io));
  err(
    io,
    `ferry train: ${model} ${strategy} ${color} on ${dataset}, ${config.epochs} epochs, backend ${backend.name} (${backend.device}), output ${outDir}`,
  );
  err(io, `  ${strategyLegend([strategy])[0]}`);
  const view = new TrainView(io, config.epochs);
  const result = await runCell(config, {
    outDir,
    cacheDir: path.join(defaultCacheDir(io), 'features'),
    backend,
    ...(o.threads !== undefined ? { decodeThreads: o.threads } : {}),
    onWarning: (m) => err(io, `warning: ${m}`),
    onProgress: (p) => view.onProgress(p),
  });
  await mkdir(outDir, { recursive: true });
  await writeFile(path.join(outDir, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
  const title = `${model} ${strategy} ${color}: best val ${pct(result.bestValAccuracy)}`;
  await writeFile(path.join(outDir, 'curves.html'), curvesHtml(title, result.epochs, result.bestEpoch));
  if (o.json) out(io, JSON.stringify(result));
  else printSummary(result, view.rows, outDir, io);
  return 0;
}

function printSummary(result: CellResult, rows: readonly string[][], outDir: string, io: CliIo): void {
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
    `wrote ${path.join(outDir, 'result.json')}, ${path.join(outDir, 'curves.html')}, checkpoints last/best.safetensors`,
  );
}
