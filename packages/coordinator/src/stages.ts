import { SOURCE_CELL_PREFIX, cellLabel, type CellSpec } from '@ferry/common';
import { cellId, type Cell } from './cell-id.js';

/**
 * A sweep's stages linked into a small DAG: a cell whose `weights` are `stage:<name>` starts from
 * the best weights of exactly one cell of that earlier stage, and its weights become
 * `cell:<source id>`, so its id (a hash of its specification) holds the source's id: change the
 * source's configuration and every dependant is a new cell.
 */

/** How a sweep file names an earlier stage's cells as a cell's starting weights. */
export const STAGE_PREFIX = 'stage:';

/** One stage's cells as expanded, their weights still `stage:<name>` where they name one. */
export interface StageCells {
  readonly stage: string;
  readonly cells: readonly Cell[];
}

/** A stage as parsed: its name and its cells' ids (after linking). */
export interface StageSummary {
  readonly name: string;
  readonly cellIds: readonly string[];
}

const unique = <T>(xs: readonly T[]): T[] => [...new Set(xs)];

/**
 * The cell of stage `ref` a cell starts from: the one with its model and its seed, or, when that
 * stage has a single seed, that seed's (a gray cell may start from an rgb one: the network is the
 * same). Anything but exactly one such cell is a problem, said with how to fix it.
 */
function sourceFor(spec: CellSpec, ref: string, sources: readonly Cell[], stage: string): Cell | string {
  const who = `stage ${stage}: cell ${cellLabel(spec)} (weights: ${STAGE_PREFIX}${ref})`;
  const sameModel = sources.filter((s) => s.spec.model === spec.model);
  if (sameModel.length === 0)
    return `${who}: stage ${ref} has no ${spec.model} cell (its models: ${unique(sources.map((s) => s.spec.model)).join(', ') || 'none'}); a cell starts from a cell of its own model`;
  const seeds = unique(sameModel.map((s) => s.spec.seed));
  const matching = seeds.includes(spec.seed)
    ? sameModel.filter((s) => s.spec.seed === spec.seed)
    : seeds.length === 1
      ? sameModel
      : [];
  if (matching.length === 0)
    return `${who}: stage ${ref} has ${spec.model} cells for seeds ${seeds.join(', ')}, not ${spec.seed}; a source stage has the seeds of the stages that start from it, or exactly one`;
  if (matching.length > 1)
    return `${who}: ${matching.length} cells of stage ${ref} match (${matching.map((s) => `${cellLabel(s.spec)} [${s.id.slice(0, 8)}]`).join('; ')}); a stage that others start from has one cell per model and seed: split it into stages (one per dataset, color, strategy or setting) and name the one to start from`;
  return matching[0]!;
}

/**
 * Links each stage's `stage:<name>` cells to their sources, stage by stage (a source stage is
 * always earlier, so its cells are final when a later stage is linked). Returns every cell once,
 * in stage order, and the problems (a cell with no or several possible sources).
 */
export function linkStages(stages: readonly StageCells[]): {
  cells: Cell[];
  stages: StageSummary[];
  problems: string[];
} {
  const linked = new Map<string, readonly Cell[]>();
  const all = new Map<string, Cell>();
  const problems = new Set<string>();
  const summaries: StageSummary[] = [];
  for (const st of stages) {
    const out: Cell[] = [];
    for (const cell of st.cells) {
      const w = cell.spec.weights;
      if (!w.startsWith(STAGE_PREFIX)) {
        out.push(cell);
        continue;
      }
      const ref = w.slice(STAGE_PREFIX.length);
      const source = sourceFor(cell.spec, ref, linked.get(ref) ?? [], st.stage);
      if (typeof source === 'string') {
        problems.add(source);
        continue;
      }
      const spec = { ...cell.spec, weights: `${SOURCE_CELL_PREFIX}${source.id}` };
      out.push({ id: cellId(spec), spec });
    }
    linked.set(st.stage, out);
    summaries.push({ name: st.stage, cellIds: unique(out.map((c) => c.id)) });
    for (const c of out) if (!all.has(c.id)) all.set(c.id, c);
  }
  return { cells: [...all.values()], stages: summaries, problems: [...problems] };
}
