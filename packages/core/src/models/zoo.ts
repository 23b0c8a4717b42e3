import { MODEL_NAMES, type ModelName } from '@ferry/common';
import { UnknownModelError } from '../errors.js';
import { buildMobileNetV2 } from './mobilenet-v2.js';
import type { ModelDef } from './model.js';
import { buildResNet } from './resnet.js';

/** Where official pretrained weights come from. */
export interface WeightSource {
  readonly url: string;
  readonly fileName: string;
  /** Full SHA-256 when known; otherwise torch hub's rule applies: the hex prefix in the file name. */
  readonly sha256?: string;
  readonly sha256Prefix: string;
  readonly classes: number;
  readonly description: string;
}

export interface ZooEntry {
  readonly name: ModelName;
  readonly family: 'resnet' | 'mobilenet_v2';
  readonly description: string;
  readonly build: (numClasses: number) => ModelDef;
  readonly weights?: WeightSource;
  /** Tiny variants exist for tests and demos; they have no pretrained weights. */
  readonly tiny: boolean;
}

function torchvisionSource(fileName: string, description: string, sha256?: string): WeightSource {
  const m = /-([0-9a-f]{8,})\.pth$/.exec(fileName);
  return {
    url: `https://download.pytorch.org/models/${fileName}`,
    fileName,
    sha256Prefix: m?.[1] ?? '',
    ...(sha256 ? { sha256 } : {}),
    classes: 1000,
    description,
  };
}

const ENTRIES: readonly ZooEntry[] = [
  {
    name: 'resnet18',
    family: 'resnet',
    description: 'ResNet-18 (torchvision), the study model',
    build: (n) => buildResNet({ arch: 'resnet18', block: 'basic', layers: [2, 2, 2, 2], baseWidth: 64 }, n),
    // Full SHA-256 as recorded by public reproductions of torchvision's file (it begins with the
    // f37072fd of the file name); the other models are checked by that prefix, as torch hub does.
    weights: torchvisionSource(
      'resnet18-f37072fd.pth',
      'torchvision IMAGENET1K_V1',
      'f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec',
    ),
    tiny: false,
  },
  {
    name: 'resnet34',
    family: 'resnet',
    description: 'ResNet-34 (torchvision)',
    build: (n) => buildResNet({ arch: 'resnet34', block: 'basic', layers: [3, 4, 6, 3], baseWidth: 64 }, n),
    weights: torchvisionSource('resnet34-b627a593.pth', 'torchvision IMAGENET1K_V1'),
    tiny: false,
  },
  {
    name: 'resnet50',
    family: 'resnet',
    description: 'ResNet-50 v1.5 (torchvision)',
    build: (n) => buildResNet({ arch: 'resnet50', block: 'bottleneck', layers: [3, 4, 6, 3], baseWidth: 64 }, n),
    weights: torchvisionSource('resnet50-0676ba61.pth', 'torchvision IMAGENET1K_V1'),
    tiny: false,
  },
  {
    name: 'mobilenet_v2',
    family: 'mobilenet_v2',
    description: 'MobileNetV2 (torchvision)',
    build: (n) => buildMobileNetV2({ arch: 'mobilenet_v2', widthMult: 1 }, n),
    weights: torchvisionSource('mobilenet_v2-b0353104.pth', 'torchvision IMAGENET1K_V1'),
    tiny: false,
  },
  {
    name: 'resnet_tiny',
    family: 'resnet',
    description: 'ResNet-18 layout at 1/8 width, one block per stage (tests, demo)',
    build: (n) => buildResNet({ arch: 'resnet_tiny', block: 'basic', layers: [1, 1, 1, 1], baseWidth: 8 }, n),
    tiny: true,
  },
  {
    name: 'resnet_tiny_bottleneck',
    family: 'resnet',
    description: 'ResNet-50 layout at 1/8 width, one block per stage (tests)',
    build: (n) =>
      buildResNet({ arch: 'resnet_tiny_bottleneck', block: 'bottleneck', layers: [1, 1, 1, 1], baseWidth: 8 }, n),
    tiny: true,
  },
  {
    name: 'mobilenet_v2_tiny',
    family: 'mobilenet_v2',
    description: 'MobileNetV2 layout at width 0.25 with a 128-channel last layer (tests)',
    build: (n) => buildMobileNetV2({ arch: 'mobilenet_v2_tiny', widthMult: 0.25, lastChannel: 128 }, n),
    tiny: true,
  },
];

// The zoo defines exactly the names @ferry/common lists (the coordinator checks sweeps against them).
{
  const defined = ENTRIES.map((e) => e.name).sort();
  if (defined.join() !== [...MODEL_NAMES].sort().join())
    throw new Error(`model zoo ${defined.join()} differs from MODEL_NAMES ${MODEL_NAMES.join()}`);
}

export function listModels(): readonly ZooEntry[] {
  return ENTRIES;
}

export function modelNames(): string[] {
  return ENTRIES.map((e) => e.name);
}

export function getZooEntry(name: string): ZooEntry {
  const e = ENTRIES.find((x) => x.name === name);
  if (!e) throw new UnknownModelError(name, modelNames());
  return e;
}

export function buildModel(name: string, numClasses: number): ModelDef {
  return getZooEntry(name).build(numClasses);
}
