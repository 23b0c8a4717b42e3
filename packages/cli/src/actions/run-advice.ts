import path from 'node:path';
import { DEFAULT_ADVISE, adviseDataset, selectBackend, type DatasetAdvice } from '@ferry/core';
import { adviceRowKey, adviceText, parseCellSpec, sourceCellOf, sourceLabel, wireAdvice } from '@ferry/common';
import { fetchSourceWeights, unary, type ConnectionOptions } from '@ferry/client';
import { cellConfigFromSpec } from '@ferry/worker';
import type { AdminClient, AdviceRow, CellSpec, SweepStatus } from '@ferry/protocol';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import type { CliIo } from '../io.js';

/** What `ferry run`'s advisor needs of the run: where the data and cache are, the workers' backend. */
export interface RunAdvisorOptions {
  readonly dataRoot: string;
  readonly cacheDir: string;
  readonly backend: string;
  readonly io: CliIo;
  /** One line per advice given, or per advice that could not be computed (a warning). */
  readonly say: (line: string) => void;
  /** Computes and stores one row's advice (tests replace it); default: adviseDataset, then PutAdvice. */
  readonly compute?: (row: AdvisedRow, from: string) => Promise<void>;
}

/** A results-table row the advisor predicts: finetune and freeze cells of one dataset, color, model and weights. */
export interface AdvisedRow {
  readonly key: string;
  readonly spec: CellSpec;
  /** The source cell (weights `cell:<id>`), or null: the weights are there from the start. */
  readonly source: string | null;
}

/** The sweep's rows with both finetune and freeze cells, keyed as the advice is stored. */
export function advisedRows(s: SweepStatus): AdvisedRow[] {
  const byKey = new Map<string, { spec: CellSpec; strategies: Set<string> }>();
  for (const c of s.cells) {
    const spec = c.spec!;
    const k = adviceRowKey(spec);
    const row = byKey.get(k) ?? { spec, strategies: new Set<string>() };
    row.strategies.add(spec.strategy);
    if (spec.strategy === 'finetune') row.spec = spec;
    byKey.set(k, row);
  }
  return [...byKey]
    .filter(([, r]) => r.strategies.has('finetune') && r.strategies.has('freeze'))
    .map(([key, r]) => ({ key, spec: r.spec, source: sourceCellOf(r.spec.weights) }));
}

/** How the row's weights read in a line: pretrained, none, a file's name, or the source cell. */
function sourceText(spec: CellSpec, s: SweepStatus): string {
  const id = sourceCellOf(spec.weights);
  if (id === null)
    return spec.weights === 'pretrained' || spec.weights === 'none' ? spec.weights : path.basename(spec.weights);
  const src = s.cells.find((c) => c.cellId === id)?.spec;
  return src ? `${sourceLabel(src)} (${id.slice(0, 8)})` : `cell ${id.slice(0, 8)}`;
}

function measuredText(r: DatasetAdvice): string {
  const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;
  return `${r.classes.length} classes, ${r.imagesPerClass.median} images per class; BatchNorm shift ${r.domain.shift.toFixed(3)} (${r.domain.level}); frozen features ${pct(r.frozen.accuracy)} (chance ${pct(r.frozen.chance)})`;
}

/**
 * `ferry run`'s advisor: for each row with finetune and freeze cells, the advisor's prediction
 * (`adviseDataset`, as `ferry advise`), computed in this process as soon as the row's weights are
 * there (at the start; for `cell:<id>` weights once that cell is done, its best weights downloaded
 * from the coordinator as a worker does), stored on the coordinator (PutAdvice). One row at a
 * time, in the background; a failure is a warning, never a failed run.
 */
export class RunAdvisor {
  private readonly started = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private backend: ReturnType<typeof selectBackend> | null = null;
  private stopped = false;

  constructor(
    private readonly o: RunAdvisorOptions,
    private readonly admin: AdminClient,
    private readonly conn: ConnectionOptions,
    private readonly sweepId: string,
  ) {}

  /** Starts the advice of every row whose weights are now available and that has none yet. */
  update(s: SweepStatus): void {
    const stored = new Set(s.advice.map(adviceRowKey));
    const state = new Map(s.cells.map((c) => [c.cellId, c.state]));
    for (const row of advisedRows(s)) {
      if (this.started.has(row.key) || stored.has(row.key)) continue;
      if (row.source !== null && state.get(row.source) !== 'done') {
        // A source that will never be done: the row is never trained, nothing to advise.
        if (['failed', 'cancelled', 'blocked'].includes(state.get(row.source) ?? '')) this.started.add(row.key);
        continue;
      }
      this.started.add(row.key);
      const from = sourceText(row.spec, s);
      this.queue = this.queue.then(() =>
        this.stopped ? undefined : (this.o.compute ?? this.advise.bind(this))(row, from),
      );
    }
  }

  /** Waits for the advice started so far. */
  settle(): Promise<void> {
    return this.queue;
  }

  /** Ctrl-C: the row being measured stops at its next batch, the rows queued are not started. */
  stop(): void {
    this.stopped = true;
  }

  private async advise(row: AdvisedRow, from: string): Promise<void> {
    const { spec } = row;
    const label = `${spec.dataset} ${spec.color} from ${from}`;
    try {
      const source = row.source !== null ? await fetchSourceWeights(this.conn, this.o.cacheDir, row.source) : null;
      const cfg = cellConfigFromSpec(parseCellSpec(spec, label), this.o.dataRoot, this.o.cacheDir, source?.file);
      this.backend ??= selectBackend(backendRequest(this.o.backend), backendOptionsFromEnv(this.o.io));
      const result = await adviseDataset(
        {
          ...DEFAULT_ADVISE,
          dataset: cfg.dataset,
          ...(cfg.valFraction !== undefined ? { valFraction: cfg.valFraction } : {}),
          model: cfg.model,
          weights: cfg.weights,
          color: cfg.color,
          imageSize: cfg.imageSize,
          seed: spec.seed,
        },
        {
          cacheDir: path.join(this.o.cacheDir, 'features'),
          backend: await this.backend,
          onProgress: () => {
            if (this.stopped) throw new Error('stopped');
          },
        },
      );
      const wire: AdviceRow = {
        dataset: spec.dataset,
        color: spec.color,
        model: spec.model,
        weights: spec.weights,
        advice: { ...wireAdvice(result.advice), reasons: [...result.advice.reasons] },
        measured: measuredText(result),
        time: '',
      };
      await unary(this.admin.putAdvice, this.admin, { sweepId: this.sweepId, rows: [wire] }, this.conn, 30_000);
      const none = cfg.weights === null ? ' (random weights: it means little)' : '';
      this.o.say(`advisor: ${label}: ${adviceText(result.advice)}, a heuristic${none}`);
    } catch (e) {
      if (this.stopped) return;
      this.o.say(`advisor: warning: no advice for ${label}: ${(e as Error).message}`);
    }
  }
}
