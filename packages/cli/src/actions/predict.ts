import { readFile } from 'node:fs/promises';
import {
  InvalidArgumentError,
  Network,
  buildModel,
  getZooEntry,
  nchwToNhwc,
  readNpy,
  readWeightsFile,
  resolveWeights,
  selectBackend,
  studyTransforms,
  transformImage,
} from '@ferry/core';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { err, out, type CliIo } from '../io.js';

export interface PredictOptions {
  readonly model: string;
  readonly weights: string;
  readonly input?: string;
  readonly image?: string;
  readonly classes?: number;
  readonly labels?: string;
  readonly top: number;
  readonly size: number;
  readonly gray: boolean;
  readonly backend: string;
  readonly json: boolean;
}

/** Logits for an already-normalised NCHW array (parity checks), or top-k classes of an image. */
export async function predictCommand(o: PredictOptions, io: CliIo): Promise<number> {
  if ((o.input === undefined) === (o.image === undefined))
    throw new InvalidArgumentError('give exactly one of --input X.npy or --image FILE\nusage: ferry predict --help');
  getZooEntry(o.model);
  const backend = await selectBackend(backendRequest(o.backend), backendOptionsFromEnv(io));
  const { net, classes } = await loadNetwork(o);
  try {
    const logits = await predictLogits(net, o);
    if (o.input !== undefined) printLogits(o, backend.name, logits, classes, io);
    else await printTop(o, backend.name, logits[0]!, classes, io);
    return 0;
  } finally {
    net.dispose();
  }
}

/** The network with the weights' classifier (its class count, unless --classes says otherwise). */
async function loadNetwork(o: PredictOptions): Promise<{ net: Network; classes: number }> {
  const { tensors } = await readWeightsFile(o.weights);
  const headName = o.model.startsWith('mobilenet') ? 'classifier.1.weight' : 'fc.weight';
  const classes = o.classes ?? tensors.get(headName)?.shape[0] ?? 1000;
  const model = buildModel(o.model, classes);
  const resolved = resolveWeights(model, tensors, o.weights);
  if (resolved.headReplaced) {
    throw new InvalidArgumentError(
      `${o.weights} has a ${resolved.fileClasses}-way classifier; --classes ${classes} does not fit it`,
    );
  }
  return { net: Network.create(model, { seed: 0, weights: resolved }), classes };
}

async function predictLogits(net: Network, o: PredictOptions): Promise<number[][]> {
  if (o.input !== undefined) {
    const arr = readNpy(await readFile(o.input), o.input);
    if (arr.shape.length !== 4 || arr.shape[1] !== 3)
      throw new InvalidArgumentError(`${o.input}: expected float32 NCHW [N, 3, H, W], got [${arr.shape.join(', ')}]`);
    const nhwc = nchwToNhwc(arr.data, arr.shape);
    return net.predictArray(nhwc.data, nhwc.shape);
  }
  const crop = o.size;
  const pixels = await transformImage(o.image!, studyTransforms(crop, o.gray ? 'gray' : 'rgb').val, 0);
  return net.predictArray(pixels, [1, crop, crop, 3]);
}

function printLogits(o: PredictOptions, backend: string, logits: number[][], classes: number, io: CliIo): void {
  if (o.json) out(io, JSON.stringify({ model: o.model, backend, shape: [logits.length, classes], logits }));
  else for (const row of logits) out(io, row.map((v) => v.toPrecision(7)).join(' '));
}

async function printTop(o: PredictOptions, backend: string, row: number[], classes: number, io: CliIo): Promise<void> {
  const labels = o.labels ? (await readFile(o.labels, 'utf8')).split('\n').map((s) => s.trim()) : [];
  const max = Math.max(...row);
  const exp = row.map((v) => Math.exp(v - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  const top = exp
    .map((e, i) => ({ index: i, label: labels[i] ?? `class ${i}`, probability: e / sum, logit: row[i]! }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, o.top);
  if (o.json) {
    out(io, JSON.stringify({ model: o.model, backend, image: o.image, top }));
    return;
  }
  err(io, `${o.model} on ${backend}: top ${o.top} of ${classes} classes for ${o.image}`);
  for (const t of top) out(io, `${(t.probability * 100).toFixed(2).padStart(6)}%  ${t.label}`);
}
