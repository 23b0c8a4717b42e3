import { STRATEGY_HINT, tryParseStrategy, type Strategy } from '@ferry/common';
import * as tf from '@tensorflow/tfjs-core';
import { updateRunningStats } from '../backends/fused.js';
import { InvalidArgumentError } from '../errors.js';
import { BN_MOMENTUM, sequence, type BnBatchStats, type ForwardContext, type ParamSpec } from '../models/layers.js';
import { paramsOfStage, type ModelDef } from '../models/model.js';
import { Rng } from '../util/rng.js';
import type { HostTensor, StateDict } from '../weights/host-tensor.js';
import { tfToTorch } from '../weights/layout.js';
import type { ResolvedWeights } from '../weights/load.js';

/** A strategy by name (`finetune`, `freeze`, `probe`, `adapt`, `freezeUntil:<stage>`; see @ferry/common). */
export function parseStrategy(s: string): Strategy {
  const parsed = tryParseStrategy(s);
  if (!parsed) throw new InvalidArgumentError(`unknown strategy "${s}"; ${STRATEGY_HINT}`);
  return parsed;
}

/** Index of the first stage that trains under `strategy`. */
export function firstTrainableStage(model: ModelDef, strategy: Strategy): number {
  switch (strategy.kind) {
    case 'finetune':
    case 'scratch':
      return 0;
    case 'freeze':
    case 'probe':
    case 'adapt':
      return model.stages.findIndex((s) => s.name === model.headStage);
    case 'freezeUntil': {
      const i = model.stages.findIndex((s) => s.name === strategy.stage);
      if (i < 0) {
        throw new InvalidArgumentError(
          `freezeUntil: ${model.arch} has no stage "${strategy.stage}"; stages: ${model.stages.map((s) => s.name).join(', ')}`,
        );
      }
      return i;
    }
  }
}

function initValues(spec: ParamSpec, rng: Rng): Float32Array {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const init = spec.init;
  switch (init.type) {
    case 'zeros':
      break;
    case 'ones':
      out.fill(1);
      break;
    case 'normal':
      for (let i = 0; i < n; i++) out[i] = rng.normal() * init.std;
      break;
    case 'uniform':
      for (let i = 0; i < n; i++) out[i] = rng.uniform(-init.bound, init.bound);
      break;
  }
  return out;
}

/**
 * A model's tensors as TF.js variables (torchvision names, TF layout) plus the forward pass with
 * a per-stage training mode. Owns its variables: call dispose().
 */
export class Network {
  readonly variables: ReadonlyMap<string, tf.Variable>;

  private constructor(
    readonly model: ModelDef,
    variables: Map<string, tf.Variable>,
  ) {
    this.variables = variables;
  }

  /** torchvision initialisation from `seed`, overwritten by `weights` where given. */
  static create(model: ModelDef, options: { seed: number; weights?: ResolvedWeights }): Network {
    const rng = Rng.fromSeed(options.seed);
    const vars = new Map<string, tf.Variable>();
    try {
      for (const spec of model.params) {
        // Draw for every tensor so that the head's initialisation does not depend on what was loaded.
        const fresh = initValues(spec, rng);
        const values = options.weights?.values.get(spec.name) ?? fresh;
        const initial = tf.tensor(values, [...spec.shape]);
        try {
          vars.set(spec.name, tf.variable(initial, spec.learnable));
        } finally {
          initial.dispose();
        }
      }
    } catch (e) {
      // Out of device memory part of the way: the variables made so far are freed with the error.
      for (const v of vars.values()) v.dispose();
      throw e;
    }
    return new Network(model, vars);
  }

  /** Runs stages [from, to) on x; `training` picks batch statistics and dropout. */
  runStages(x: tf.Tensor, from: number, to: number, ctx: Omit<ForwardContext, 'params'>): tf.Tensor {
    const full: ForwardContext = { ...ctx, params: this.variables };
    return sequence(
      x,
      this.model.stages.slice(from, to).map((stage) => (h: tf.Tensor) => stage.apply(full, h)),
    );
  }

  /** Logits in inference mode (running statistics, no dropout). NHWC input. */
  predict(x: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => this.runStages(x, 0, this.model.stages.length, { training: false }) as tf.Tensor2D);
  }

  /** Logits for NHWC float data, as plain arrays (for callers that hold no tensors). */
  async predictArray(data: Float32Array, shape: readonly [number, number, number, number]): Promise<number[][]> {
    const x = tf.tensor4d(data, [...shape]);
    const logits = this.predict(x);
    try {
      return (await logits.array()) as number[][];
    } finally {
      logits.dispose();
      x.dispose();
    }
  }

  /** The variables a strategy trains: learnable tensors of stages from `first` on. */
  trainableVariables(first: number): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    this.model.stages.forEach((stage, i) => {
      if (i < first) return;
      for (const spec of paramsOfStage(this.model, stage))
        if (spec.learnable) out.set(spec.name, this.variables.get(spec.name)!);
    });
    return out;
  }

  /** Device-side copies of the named tensors (what training can change), for restore(). */
  snapshot(names: Iterable<string>): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const name of names) out.set(name, tf.clone(this.variables.get(name)!));
    return out;
  }

  /** Puts back tensors taken by snapshot(). */
  restore(snapshot: ReadonlyMap<string, tf.Tensor>): void {
    for (const [name, t] of snapshot) this.variables.get(name)!.assign(t);
  }

  /** torch's running-stat update from the batch statistics a training forward pass collected. */
  updateBatchNormStats(stats: readonly BnBatchStats[], momentum = BN_MOMENTUM): void {
    for (const s of stats) {
      const rm = this.variables.get(`${s.name}.running_mean`)!;
      const rv = this.variables.get(`${s.name}.running_var`)!;
      updateRunningStats(rm, rv, s.stats, s.count, momentum);
    }
  }

  /** The state as a torchvision state_dict (torch layouts), read back from the device. */
  async exportState(): Promise<StateDict> {
    const out: StateDict = new Map();
    for (const spec of this.model.params) {
      const data = (await this.variables.get(spec.name)!.data()) as Float32Array;
      out.set(spec.name, { dtype: 'float32', shape: spec.torchShape, data: tfToTorch(spec, data) });
    }
    return out;
  }

  /** Overwrites every variable from a state_dict already checked by resolveWeights. */
  assign(values: ReadonlyMap<string, Float32Array>): void {
    for (const spec of this.model.params) {
      const v = values.get(spec.name);
      if (v) tf.tidy(() => this.variables.get(spec.name)!.assign(tf.tensor(v, [...spec.shape])));
    }
  }

  dispose(): void {
    for (const v of this.variables.values()) v.dispose();
  }
}

export function hostTensor(data: Float32Array, shape: readonly number[]): HostTensor {
  return { dtype: 'float32', shape, data };
}
