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
import { Args } from '../args.js';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { err, out, type CliIo } from '../io.js';

export const USAGE =
  'ferry predict --model M --weights FILE (--input X.npy | --image FILE) [--classes N] [--labels FILE] [--top K] [--size 224] [--gray] [--backend B] [--json]';

/** Logits for an already-normalised NCHW array (parity checks), or top-k classes of an image. */
export async function predictCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(
    argv,
    {
      model: { type: 'string' },
      weights: { type: 'string' },
      input: { type: 'string' },
      image: { type: 'string' },
      classes: { type: 'string' },
      labels: { type: 'string' },
      top: { type: 'string' },
      size: { type: 'string' },
      gray: { type: 'boolean' },
      backend: { type: 'string' },
      json: { type: 'boolean' },
    },
    USAGE,
  );
  const values = {
    model: args.required('model'),
    weights: args.required('weights'),
    input: args.string('input'),
    image: args.string('image'),
    labels: args.string('labels'),
    json: args.flag('json'),
    gray: args.flag('gray'),
  };
  if ((values.input === undefined) === (values.image === undefined)) {
    throw new InvalidArgumentError(`give exactly one of --input X.npy or --image FILE\nusage: ${USAGE}`);
  }
  getZooEntry(values.model);
  const backend = await selectBackend(backendRequest(args.string('backend')), backendOptionsFromEnv(io));
  const { tensors } = await readWeightsFile(values.weights);
  // The class count comes from the weights' classifier unless given.
  const headName = values.model.startsWith('mobilenet') ? 'classifier.1.weight' : 'fc.weight';
  const classes = args.int('classes', tensors.get(headName)?.shape[0] ?? 1000, 1);
  const model = buildModel(values.model, classes);
  const resolved = resolveWeights(model, tensors, values.weights);
  if (resolved.headReplaced) {
    throw new InvalidArgumentError(
      `${values.weights} has a ${resolved.fileClasses}-way classifier; --classes ${classes} does not fit it`,
    );
  }
  const net = Network.create(model, { seed: 0, weights: resolved });
  try {
    let logits: number[][];
    if (values.input !== undefined) {
      const arr = readNpy(await readFile(values.input), values.input);
      if (arr.shape.length !== 4 || arr.shape[1] !== 3) {
        throw new InvalidArgumentError(
          `${values.input}: expected float32 NCHW [N, 3, H, W], got [${arr.shape.join(', ')}]`,
        );
      }
      const nhwc = nchwToNhwc(arr.data, arr.shape);
      logits = await net.predictArray(nhwc.data, nhwc.shape);
    } else {
      const crop = args.int('size', 224, 8);
      const pixels = await transformImage(values.image!, studyTransforms(crop, values.gray ? 'gray' : 'rgb').val, 0);
      logits = await net.predictArray(pixels, [1, crop, crop, 3]);
    }
    if (values.input !== undefined) {
      if (values.json)
        out(
          io,
          JSON.stringify({ model: values.model, backend: backend.name, shape: [logits.length, classes], logits }),
        );
      else for (const row of logits) out(io, row.map((v) => v.toPrecision(7)).join(' '));
      return 0;
    }
    const labels = values.labels ? (await readFile(values.labels, 'utf8')).split('\n').map((s) => s.trim()) : [];
    const k = args.int('top', 5, 1);
    const row = logits[0]!;
    const max = Math.max(...row);
    const exp = row.map((v) => Math.exp(v - max));
    const sum = exp.reduce((a, b) => a + b, 0);
    const top = exp
      .map((e, i) => ({ index: i, label: labels[i] ?? `class ${i}`, probability: e / sum, logit: row[i]! }))
      .sort((a, b) => b.probability - a.probability)
      .slice(0, k);
    if (values.json) out(io, JSON.stringify({ model: values.model, backend: backend.name, image: values.image, top }));
    else {
      err(io, `${values.model} on ${backend.name}: top ${k} of ${classes} classes for ${values.image}`);
      for (const t of top) out(io, `${(t.probability * 100).toFixed(2).padStart(6)}%  ${t.label}`);
    }
    return 0;
  } finally {
    net.dispose();
  }
}
