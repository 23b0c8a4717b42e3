import type * as tf from '@tensorflow/tfjs-core';
import type { ForwardContext, ParamSpec } from './layers.js';

/** A contiguous piece of a network; the unit of freezing (`freezeUntil`). */
export interface Stage {
  /** torchvision module name: `layer3`, `features.7`, `fc`. */
  readonly name: string;
  /** state_dict name prefixes owned by this stage. */
  readonly prefixes: readonly string[];
  readonly apply: (ctx: ForwardContext, x: tf.Tensor) => tf.Tensor;
}

/** A network definition: parameters in torchvision naming, and its forward pass by stages. */
export interface ModelDef {
  /** Zoo name, e.g. `resnet18`. */
  readonly arch: string;
  readonly numClasses: number;
  readonly params: readonly ParamSpec[];
  readonly stages: readonly Stage[];
  /** The stage replaced for a new task (`fc`, `classifier`). */
  readonly headStage: string;
  /** Input size the architecture was designed for. */
  readonly inputSize: number;
}

export function stageOfParam(model: ModelDef, param: string): Stage | undefined {
  return model.stages.find((s) => s.prefixes.some((p) => param === p || param.startsWith(`${p}.`)));
}

export function paramsOfStage(model: ModelDef, stage: Stage): ParamSpec[] {
  return model.params.filter((p) => stageOfParam(model, p.name) === stage);
}

export function countParams(model: ModelDef, onlyLearnable = false): number {
  let n = 0;
  for (const p of model.params) {
    if (onlyLearnable && !p.learnable) continue;
    n += p.shape.reduce((a, b) => a * b, 1);
  }
  return n;
}
