import { parseCellSpec } from '@ferry/common';
import type { CellSpec as ProtoCellSpec } from '@ferry/protocol';
import type { CellSpec } from './sweep.js';

/** A cell's specification on the wire (proto3 optional valFraction) and in the coordinator. */
export function toProtoSpec(s: CellSpec): ProtoCellSpec {
  const { valFraction, backends, ...rest } = s;
  return { ...rest, backends: [...backends], ...(valFraction !== null ? { valFraction } : {}) };
}

/** A cell's specification from the wire, checked against the table (FERRY_ERR_INVALID_ARGUMENT when wrong). */
export function fromProtoSpec(s: ProtoCellSpec): CellSpec {
  return parseCellSpec(s, 'a cell specification');
}
