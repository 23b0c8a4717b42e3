import type * as tf from '@tensorflow/tfjs-core';
import { SpecBuilder, dropout, globalAvgPool, sequence, type Layer } from './layers.js';
import type { ModelDef, Stage } from './model.js';

/** torchvision.models.mobilenet_v2, with its module names. */
export interface MobileNetV2Config {
  readonly arch: string;
  readonly widthMult: number;
  /** Override of the 1280-channel last layer (tiny variants only). */
  readonly lastChannel?: number;
}

/** torchvision's _make_divisible: round to a multiple of 8, never below 90% of the input. */
export function makeDivisible(v: number, divisor = 8): number {
  let n = Math.max(divisor, Math.floor(v + divisor / 2) - (Math.floor(v + divisor / 2) % divisor));
  if (n < 0.9 * v) n += divisor;
  return n;
}

const SETTINGS: readonly (readonly [number, number, number, number])[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

function convBnRelu6(
  b: SpecBuilder,
  name: string,
  cin: number,
  cout: number,
  k: number,
  stride: number,
  groups = 1,
): Layer {
  const conv = b.conv(`${name}.0`, cin, cout, k, stride, (k - 1) >> 1, groups);
  const bn = b.bnAct(`${name}.1`, cout, 'relu6');
  return (ctx, x) => sequence(x, [(h) => conv(ctx, h), (h) => bn(ctx, h)]);
}

function invertedResidual(
  b: SpecBuilder,
  name: string,
  inp: number,
  oup: number,
  stride: number,
  expand: number,
): Layer {
  const hidden = Math.round(inp * expand);
  const useRes = stride === 1 && inp === oup;
  const layers: Layer[] = [];
  let i = 0;
  if (expand !== 1) layers.push(convBnRelu6(b, `${name}.conv.${i++}`, inp, hidden, 1, 1));
  layers.push(convBnRelu6(b, `${name}.conv.${i++}`, hidden, hidden, 3, stride, hidden));
  const project = b.conv(`${name}.conv.${i++}`, hidden, oup, 1, 1, 0);
  // x + bn(project(.)): the residual add fused into the BatchNorm where the backend can.
  const bn = b.bnAct(`${name}.conv.${i++}`, oup, 'none');
  // Each step in its own scope (sequence): what one makes is freed once the next has run.
  return (ctx, x) =>
    sequence(x, [
      ...layers.map((l) => (h: tf.Tensor4D) => l(ctx, h)),
      (h) => project(ctx, h),
      (h) => bn(ctx, h, useRes ? x : undefined),
    ]);
}

export function buildMobileNetV2(config: MobileNetV2Config, numClasses: number): ModelDef {
  const b = new SpecBuilder();
  let input = makeDivisible(32 * config.widthMult);
  const last = config.lastChannel ?? makeDivisible(1280 * Math.max(1, config.widthMult));
  const stages: Stage[] = [];
  const stem = convBnRelu6(b, 'features.0', 3, input, 3, 2);
  stages.push({ name: 'features.0', prefixes: ['features.0'], apply: (ctx, x) => stem(ctx, x as tf.Tensor4D) });
  let idx = 1;
  for (const [t, c, n, s] of SETTINGS) {
    const out = makeDivisible(c * config.widthMult);
    for (let i = 0; i < n; i++) {
      const name = `features.${idx++}`;
      const block = invertedResidual(b, name, input, out, i === 0 ? s : 1, t);
      stages.push({ name, prefixes: [name], apply: (ctx, x) => block(ctx, x as tf.Tensor4D) });
      input = out;
    }
  }
  const lastName = `features.${idx}`;
  const head = convBnRelu6(b, lastName, input, last, 1, 1);
  stages.push({ name: lastName, prefixes: [lastName], apply: (ctx, x) => head(ctx, x as tf.Tensor4D) });
  stages.push({ name: 'avgpool', prefixes: [], apply: (_ctx, x) => globalAvgPool(x as tf.Tensor4D) });
  const fc = b.linear('classifier.1', last, numClasses, 'normal-0.01');
  stages.push({
    name: 'classifier',
    prefixes: ['classifier'],
    apply: (ctx, x) => fc(ctx, dropout(ctx, x as tf.Tensor2D, 0.2)),
  });
  return { arch: config.arch, numClasses, params: b.specs, stages, headStage: 'classifier', inputSize: 224 };
}
