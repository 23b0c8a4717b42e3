import { strategyDefinition, type CellSpec } from '@ferry/common';
import { createHash } from 'node:crypto';

/** One cell of a sweep: its specification and the id that is a hash of it. */
export interface Cell {
  readonly id: string;
  readonly spec: CellSpec;
}

/** Stable JSON (sorted keys) for hashing. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * A cell's id: a hash of its specification, plus the strategy's revision where its meaning has
 * changed (`freeze` now runs BatchNorm in training mode), so a result of the old meaning is never
 * taken for the new one. Revision 1 adds nothing: those ids are what they always were.
 */
export function cellId(spec: CellSpec): string {
  const revision = strategyDefinition(spec.strategy)?.revision ?? 1;
  const hashed = revision > 1 ? { ...spec, strategyRevision: revision } : spec;
  return createHash('sha256').update(canonical(hashed)).digest('hex').slice(0, 16);
}
