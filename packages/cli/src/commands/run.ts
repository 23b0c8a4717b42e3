import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseSweep, resultsTable, tableCsv, tableMarkdown, type Cell, type CellOutcome } from '@ferry/coordinator';
import { DEFAULT_CELL, InvalidArgumentError, getZooEntry, runCell, selectBackend, type BackendRequest, type CellConfig, type CellResult } from '@ferry/core';
import { Args } from '../args.js';
import { ProgressLine, err, out, type CliIo } from '../io.js';
import { defaultCacheDir } from './weights.js';

const USAGE = 'ferry run SWEEP.yaml [--data-root DIR] [--out DIR] [--backend B] [--workers 1]';

/** Maps a coordinator cell onto the engine's configuration (paths resolved under the data root). */
export function cellConfig(cell: Cell, dataRoot: string, cacheDir: string): CellConfig {
  const s = cell.spec;
  let weights: string | null = null;
  if (s.weights === 'pretrained') {
    const src = getZooEntry(s.model).weights;
    if (!src) throw new InvalidArgumentError(`cell ${cell.id}: ${s.model} has no pretrained weights; set weights: none`);
    weights = path.join(cacheDir, 'weights', src.fileName);
    if (!existsSync(weights)) throw new InvalidArgumentError(`cell ${cell.id}: pretrained ${s.model} weights missing (${weights}); run \`ferry weights pull ${s.model}\``);
  } else if (s.weights !== 'none') weights = path.resolve(dataRoot, s.weights);
  return {
    ...DEFAULT_CELL,
    dataset: path.resolve(dataRoot, s.path),
    ...(s.valFraction !== null ? { valFraction: s.valFraction } : {}),
    model: s.model,
    weights,
    color: s.color,
    strategy: s.strategy,
    epochs: s.epochs,
    batchSize: s.batchSize,
    lr: s.lr,
    momentum: s.momentum,
    weightDecay: s.weightDecay,
    lrStepEpochs: s.lrStepEpochs,
    lrGamma: s.lrGamma,
    seed: s.seed,
    imageSize: s.imageSize,
    featureCache: s.featureCache,
    augmentViews: s.augmentViews,
    microBatch: s.microBatch,
  };
}

/**
 * `ferry run`: every cell of a sweep on this machine, resumable. This is the in-process form of the
 * embedded default; the coordinator/worker processes over gRPC replace the loop (cluster issue)
 * with the same cell ids, result files and table.
 */
export async function runCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(argv, { 'data-root': { type: 'string' }, out: { type: 'string' }, backend: { type: 'string' }, workers: { type: 'string' } }, USAGE);
  const file = args.positionals[0];
  if (!file) throw new InvalidArgumentError(`which sweep file? usage: ${USAGE}`);
  if (args.int('workers', 1, 1) !== 1) throw new InvalidArgumentError('--workers > 1 needs the coordinator/worker processes, which are not built yet; use --workers 1');
  const sweep = parseSweep(await readFile(file, 'utf8').catch((e: Error) => {
    throw new InvalidArgumentError(`cannot read ${file}: ${e.message}`);
  }), file);
  const dataRoot = args.string('data-root') ?? 'data';
  const outRoot = args.string('out') ?? path.join('runs', sweep.name);
  const cacheDir = defaultCacheDir(io);
  const configs = sweep.cells.map((c) => ({ cell: c, config: cellConfig(c, dataRoot, cacheDir) }));
  const backend = await selectBackend((args.string('backend') ?? 'auto') as BackendRequest);
  err(io, `ferry run: sweep "${sweep.name}", ${sweep.cells.length} cells, backend ${backend.name} (${backend.device}), results in ${outRoot}`);
  const outcomes: CellOutcome[] = [];
  const results: CellResult[] = [];
  for (const [i, { cell, config }] of configs.entries()) {
    const dir = path.join(outRoot, 'cells', cell.id);
    const resultFile = path.join(dir, 'result.json');
    const label = `[${i + 1}/${configs.length}] ${cell.spec.dataset} ${cell.spec.color} ${cell.spec.strategy} ${cell.spec.model} seed ${cell.spec.seed}`;
    let result: CellResult;
    if (existsSync(resultFile)) {
      result = JSON.parse(await readFile(resultFile, 'utf8')) as CellResult;
      err(io, `${label}: done earlier (${(result.bestValAccuracy * 100).toFixed(1)}%), not re-run`);
    } else {
      const progress = new ProgressLine(io);
      result = await runCell(config, {
        outDir: dir,
        cacheDir: path.join(cacheDir, 'features'),
        backend,
        onWarning: (m) => err(io, `warning: ${label}: ${m}`),
        onProgress: (p) => {
          if (p.type === 'step') progress.update((p.epoch * p.stepsPerEpoch + p.step) / (config.epochs * p.stepsPerEpoch), `${label} epoch ${p.epoch + 1}/${config.epochs}`);
        },
      });
      await mkdir(dir, { recursive: true });
      await writeFile(resultFile, `${JSON.stringify({ ...result, cellId: cell.id, spec: cell.spec }, null, 2)}\n`);
      progress.done(`${label}: best val ${(result.bestValAccuracy * 100).toFixed(1)}% at epoch ${result.bestEpoch + 1} (${(result.wallMs / 1000).toFixed(1)}s)`);
    }
    results.push(result);
    outcomes.push({ spec: cell.spec, bestValAccuracy: result.bestValAccuracy, bestEpoch: result.bestEpoch, wallMs: result.wallMs, imagesPerSec: result.imagesPerSec });
  }
  const table = resultsTable(outcomes);
  await writeFile(path.join(outRoot, 'results.md'), `${tableMarkdown(table)}\n`);
  await writeFile(path.join(outRoot, 'results.csv'), `${tableCsv(table)}\n`);
  await writeFile(path.join(outRoot, 'results.json'), `${JSON.stringify({ sweep: sweep.name, table, cells: outcomes }, null, 2)}\n`);
  out(io, tableMarkdown(table));
  out(io);
  out(io, `results: ${path.join(outRoot, 'results.md')} (.csv, .json); per cell: ${path.join(outRoot, 'cells')}/<id>/result.json`);
  return 0;
}
