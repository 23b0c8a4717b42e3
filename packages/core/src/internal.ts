/**
 * @ferry/core/internal: the engine's kernels, for ferry's own tests and benchmarks (not an API for
 * the other packages, which use @ferry/core): the per-backend kernel workarounds, the composite
 * convolution gradients, the fused BatchNorm/SGD steps and the WebGPU programs' ops and tuning.
 */
export {
  WORKAROUNDS,
  registerBackendWorkarounds,
  restoreNativeKernels,
  setWebGpuFastPath,
} from './backends/workarounds.js';
export {
  conv2dBackpropFilterComposite,
  conv2dBackpropInputComposite,
  depthwiseBackpropFilterComposite,
  depthwiseBackpropInputComposite,
} from './backends/composite-kernels.js';
export {
  batchNormInfer,
  batchNormTrain,
  disposeBnStats,
  fusedWebGpuActive,
  sgdMomentumStep,
  updateRunningStats,
  type Activation,
  type BnStats,
} from './backends/fused.js';
export {
  DEFAULT_TUNING,
  bnStats,
  conv2dFilterGrad,
  depthwiseFilterGrad,
  setWebGpuTuning,
  splitCount,
  type WebGpuTuning,
} from './backends/webgpu/ops.js';
export { crop, resizeBilinear, type Pixels } from './data/resample.js';
export { installLeanGradients } from './backends/lean-gradients.js';
