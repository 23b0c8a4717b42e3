import { readFile } from 'node:fs/promises';
import { WeightsCorruptError, WeightsMismatchError } from '../errors.js';
import type { ModelDef } from '../models/model.js';
import type { StateDict } from './host-tensor.js';
import { torchToTf } from './layout.js';
import { readPth } from './pth.js';
import { readSafetensors } from './safetensors.js';
import { ZipReader } from './zip.js';

/** Tensors in a state_dict that carry no weights and are accepted without a counterpart. */
const IGNORED_SUFFIXES = ['.num_batches_tracked'];

/** Reads a weights file by content: torch .pth (zip), .safetensors, or a ferry checkpoint. */
export async function readWeightsFile(file: string): Promise<{ tensors: StateDict; metadata: Record<string, string> }> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new WeightsCorruptError(file, `cannot read: ${(e as Error).message}`, { cause: e });
  }
  return parseWeights(bytes, file);
}

export function parseWeights(
  bytes: Uint8Array,
  file: string,
): { tensors: StateDict; metadata: Record<string, string> } {
  if (bytes.length === 0) throw new WeightsCorruptError(file, 'file is empty');
  if (ZipReader.isZip(bytes) || bytes[0] === 0x80) return { tensors: readPth(bytes, file), metadata: {} };
  const st = readSafetensors(bytes, file);
  const tensors: StateDict = new Map();
  // A ferry checkpoint stores optimizer state beside the model's tensors; weights are the rest.
  for (const [k, v] of st.tensors) if (!k.startsWith('optimizer.')) tensors.set(k, v);
  return { tensors, metadata: { ...st.metadata } };
}

export interface ResolvedWeights {
  /** Values in TF.js layout, by torchvision name. Head tensors are absent when the head was replaced. */
  readonly values: Map<string, Float32Array>;
  /** True when the file's classifier did not fit `model.numClasses` and a new head is initialised. */
  readonly headReplaced: boolean;
  /** Classes of the classifier in the file. */
  readonly fileClasses: number | undefined;
}

/**
 * Maps a state_dict onto a model: every tensor must be present with the torch shape the model
 * expects; a classifier of another size is dropped (the N-way head is new). Problems are listed
 * by tensor name before anything is trained.
 */
export function resolveWeights(model: ModelDef, state: StateDict, source: string): ResolvedWeights {
  const head = model.stages.find((s) => s.name === model.headStage);
  const isHead = (n: string): boolean => head?.prefixes.some((p) => n.startsWith(`${p}.`)) ?? false;
  const headSpecs = model.params.filter((p) => isHead(p.name));
  const weightSpec = headSpecs.find((p) => p.kind === 'linear');
  const fileHead = weightSpec ? state.get(weightSpec.name) : undefined;
  const fileClasses = fileHead?.shape[0];
  const headReplaced = fileHead !== undefined && fileClasses !== model.numClasses;

  const problems: string[] = [];
  const values = new Map<string, Float32Array>();
  for (const spec of model.params) {
    if (headReplaced && isHead(spec.name)) continue;
    const t = state.get(spec.name);
    if (!t) {
      problems.push(`missing tensor ${spec.name} (expected shape [${spec.torchShape.join(', ')}])`);
      continue;
    }
    if (t.shape.length !== spec.torchShape.length || t.shape.some((d, i) => d !== spec.torchShape[i])) {
      problems.push(
        `shape mismatch for ${spec.name}: file has [${t.shape.join(', ')}], ${model.arch} expects [${spec.torchShape.join(', ')}]`,
      );
      continue;
    }
    values.set(spec.name, torchToTf(spec, t.data));
  }
  const known = new Set(model.params.map((p) => p.name));
  for (const name of state.keys()) {
    if (known.has(name) || IGNORED_SUFFIXES.some((s) => name.endsWith(s))) continue;
    if (headReplaced && isHead(name)) continue;
    problems.push(`unexpected tensor ${name}`);
  }
  if (problems.length > 0) {
    throw new WeightsMismatchError(
      problems,
      `${source} does not fit ${model.arch} (${problems.length} problem${problems.length > 1 ? 's' : ''})`,
    );
  }
  return { values, headReplaced, fileClasses };
}
