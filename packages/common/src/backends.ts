/**
 * The engine's backends in the order `auto` prefers them (fastest first): TensorFlow.js's own
 * native builds where they installed (libtensorflow; GPU first), WebGPU on a hardware adapter,
 * libtorch's kernels through ferry's addon (`torch`), WebAssembly, then pure JavaScript. One list
 * for the engine's selection, the CLI's `--backend` and a sweep's `hyper.backends` check.
 */
export const BACKEND_NAMES = ['tensorflow-gpu', 'tensorflow', 'webgpu', 'torch', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
