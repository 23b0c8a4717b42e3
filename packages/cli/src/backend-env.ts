import { InvalidArgumentError, type BackendOptions, type BackendRequest } from '@ferry/core';
import type { CliIo } from './io.js';

/**
 * Backend start-up choices from the environment (the one place the CLI reads them):
 * FERRY_WASM_THREADS sizes wasm's thread pool; FERRY_WEBGPU_PROFILE=1 creates the WebGPU device
 * with timestamp queries, so tf.profile reports kernel times; FERRY_WEBGPU_FAST=0 runs TensorFlow.js's
 * own WebGPU kernels instead of ferry's (for comparisons); FERRY_TORCH_THREADS sets libtorch's
 * intra-op threads and FERRY_TORCH_DEVICE its device (`cpu`, `cuda:N` with a CUDA libtorch);
 * FERRY_TORCH_MEMORY_MIB caps its CPU tensor memory (an allocation past it fails that cell with an
 * out-of-memory error, and the worker goes on with the next).
 */
export function backendOptionsFromEnv(io: CliIo): BackendOptions {
  const threads = io.env['FERRY_WASM_THREADS'];
  const profile = io.env['FERRY_WEBGPU_PROFILE'];
  const fast = io.env['FERRY_WEBGPU_FAST'];
  const torchThreads = io.env['FERRY_TORCH_THREADS'];
  const torchDevice = io.env['FERRY_TORCH_DEVICE'];
  const torchMemory = io.env['FERRY_TORCH_MEMORY_MIB'];
  return {
    ...(torchThreads ? { torchThreads: Number(torchThreads) } : {}),
    ...(torchDevice ? { torchDevice } : {}),
    ...(torchMemory ? { torchMemoryMiB: positiveMiB(torchMemory) } : {}),
    ...(fast === '0' || fast === 'false' ? { webgpuFastPath: false } : {}),
    ...(threads ? { wasmThreads: Number(threads) } : {}),
    ...(profile === '1' || profile === 'true' ? { webgpuProfiling: true } : {}),
  };
}

function positiveMiB(value: string): number {
  const n = Number(value);
  if (!(n > 0))
    throw new InvalidArgumentError(
      `FERRY_TORCH_MEMORY_MIB must be a positive number of MiB, not ${JSON.stringify(value)}`,
    );
  return n;
}

export function backendRequest(value: string | undefined): BackendRequest {
  return (value ?? 'auto') as BackendRequest;
}
