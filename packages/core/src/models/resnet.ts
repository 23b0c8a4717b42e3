import type * as tf from '@tensorflow/tfjs-core';
import { SpecBuilder, globalAvgPool, maxPool3s2, sequence, type ForwardContext, type Layer } from './layers.js';
import type { ModelDef, Stage } from './model.js';

/** torchvision.models.resnet, layer for layer and name for name. */
export interface ResNetConfig {
  readonly arch: string;
  readonly block: 'basic' | 'bottleneck';
  readonly layers: readonly [number, number, number, number];
  /** Width of the stem and of layer1 (64 in torchvision). */
  readonly baseWidth: number;
}

type Block = (ctx: ForwardContext, x: tf.Tensor4D) => tf.Tensor4D;

function basicBlock(b: SpecBuilder, name: string, inplanes: number, planes: number, stride: number): Block {
  const conv1 = b.conv(`${name}.conv1`, inplanes, planes, 3, stride, 1);
  const bn1 = b.bnAct(`${name}.bn1`, planes, 'relu');
  const conv2 = b.conv(`${name}.conv2`, planes, planes, 3, 1, 1);
  // relu(bn2(conv2(.)) + identity), the add and the ReLU fused into bn2 where the backend can.
  const bn2 = b.bnAct(`${name}.bn2`, planes, 'relu');
  const down = downsample(b, name, inplanes, planes, stride);
  // Each step in its own scope (sequence): a convolution's output is freed once normalised.
  return (ctx, x) =>
    sequence(x, [
      (h) => conv1(ctx, h),
      (h) => bn1(ctx, h),
      (h) => conv2(ctx, h),
      (h) => bn2(ctx, h, down ? down(ctx, x) : x),
    ]);
}

function bottleneck(b: SpecBuilder, name: string, inplanes: number, planes: number, stride: number): Block {
  const width = planes;
  const conv1 = b.conv(`${name}.conv1`, inplanes, width, 1, 1, 0);
  const bn1 = b.bnAct(`${name}.bn1`, width, 'relu');
  // torchvision v1.5: the stride sits on the 3x3 convolution.
  const conv2 = b.conv(`${name}.conv2`, width, width, 3, stride, 1);
  const bn2 = b.bnAct(`${name}.bn2`, width, 'relu');
  const conv3 = b.conv(`${name}.conv3`, width, planes * 4, 1, 1, 0);
  const bn3 = b.bnAct(`${name}.bn3`, planes * 4, 'relu');
  const down = downsample(b, name, inplanes, planes * 4, stride);
  return (ctx, x) =>
    sequence(x, [
      (h) => conv1(ctx, h),
      (h) => bn1(ctx, h),
      (h) => conv2(ctx, h),
      (h) => bn2(ctx, h),
      (h) => conv3(ctx, h),
      (h) => bn3(ctx, h, down ? down(ctx, x) : x),
    ]);
}

function downsample(
  b: SpecBuilder,
  name: string,
  inplanes: number,
  outplanes: number,
  stride: number,
): Layer | undefined {
  if (stride === 1 && inplanes === outplanes) return undefined;
  const conv = b.conv(`${name}.downsample.0`, inplanes, outplanes, 1, stride, 0);
  const bn = b.bn(`${name}.downsample.1`, outplanes);
  return (ctx, x) => bn(ctx, conv(ctx, x));
}

export function buildResNet(config: ResNetConfig, numClasses: number): ModelDef {
  const b = new SpecBuilder();
  const expansion = config.block === 'basic' ? 1 : 4;
  const w = config.baseWidth;
  const conv1 = b.conv('conv1', 3, w, 7, 2, 3);
  const bn1 = b.bnAct('bn1', w, 'relu');
  const stages: Stage[] = [
    {
      name: 'conv1',
      prefixes: ['conv1', 'bn1'],
      apply: (ctx, x) => sequence(x as tf.Tensor4D, [(h) => conv1(ctx, h), (h) => bn1(ctx, h), maxPool3s2]),
    },
  ];
  let inplanes = w;
  config.layers.forEach((count, li) => {
    const planes = w * 2 ** li;
    const stride = li === 0 ? 1 : 2;
    const blocks: Block[] = [];
    for (let i = 0; i < count; i++) {
      const name = `layer${li + 1}.${i}`;
      const make = config.block === 'basic' ? basicBlock : bottleneck;
      blocks.push(make(b, name, inplanes, planes, i === 0 ? stride : 1));
      inplanes = planes * expansion;
    }
    stages.push({
      name: `layer${li + 1}`,
      prefixes: [`layer${li + 1}`],
      apply: (ctx, x) =>
        sequence(
          x as tf.Tensor4D,
          blocks.map((block) => (h: tf.Tensor4D) => block(ctx, h)),
        ),
    });
  });
  stages.push({ name: 'avgpool', prefixes: [], apply: (_ctx, x) => globalAvgPool(x as tf.Tensor4D) });
  const fc = b.linear('fc', inplanes, numClasses, 'torch-default');
  stages.push({ name: 'fc', prefixes: ['fc'], apply: (ctx, x) => fc(ctx, x as tf.Tensor2D) });
  return { arch: config.arch, numClasses, params: b.specs, stages, headStage: 'fc', inputSize: 224 };
}
