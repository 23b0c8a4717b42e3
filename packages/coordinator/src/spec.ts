import type { CellSpec as ProtoCellSpec } from '@ferry/protocol';
import type { CellSpec } from './sweep.js';

/** A cell's specification on the wire (proto3 optional valFraction) and in the coordinator. */
export function toProtoSpec(s: CellSpec): ProtoCellSpec {
  const { valFraction, backends, ...rest } = s;
  return { ...rest, backends: [...backends], ...(valFraction !== null ? { valFraction } : {}) };
}

export function fromProtoSpec(s: ProtoCellSpec): CellSpec {
  const { valFraction, ...rest } = s;
  return { ...rest, valFraction: valFraction ?? null } as CellSpec;
}
