/**
 * The names of the model zoo (torchvision's names, and ferry's tiny test models). The engine
 * (`@ferry/core` models/zoo.ts) defines each one and is checked against this list; the coordinator
 * refuses a sweep naming any other at submit, before a worker spends an attempt on it.
 */
export const MODEL_NAMES = [
  'resnet18',
  'resnet34',
  'resnet50',
  'mobilenet_v2',
  'resnet_tiny',
  'resnet_tiny_bottleneck',
  'mobilenet_v2_tiny',
] as const;

export type ModelName = (typeof MODEL_NAMES)[number];

export function isModelName(s: string): s is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(s);
}
