import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// Gradients are registered separately from the ops, and tfjs-core's Node build does not ship them:
// the union package's Node build registers them (kernel registries are process-global).
import '@tensorflow/tfjs';
import { BACKEND_NAMES, type BackendName } from '@ferry/common';
import { registerTorchBackend } from '@ferry/torch';
import { BackendUnavailableError, InvalidArgumentError } from '../errors.js';
import { watchWebGpuDevice } from './device-health.js';
import { startThreadedWasm } from './wasm-threads.js';
import { preflightWebGpu, requestAdapter, type WebGpuAdapterReport } from './webgpu-adapter.js';
import { registerBackendWorkarounds, setWebGpuFastPath } from './workarounds.js';

/**
 * The one selection point for TensorFlow.js backends (what to try, in which order, and why each
 * one was not taken). WebGPU's adapter checks live in webgpu-adapter.ts, the WebGPU device's
 * error reports in device-health.ts.
 */

export type { WebGpuAdapterReport } from './webgpu-adapter.js';

/** Backends in the order `auto` prefers them (fastest first): @ferry/common's one list. */
export { BACKEND_NAMES, type BackendName };
export type BackendRequest = BackendName | 'auto';

/** What ferry found out about one backend. */
export interface BackendProbe {
  readonly name: BackendName;
  readonly available: boolean;
  /** Why it is unavailable, or null when it initialised. */
  readonly reason: string | null;
  /** Adapter or device description when known (webgpu adapter, CUDA device). */
  readonly device?: string;
  /** webgpu only: what the adapter is and offers. */
  readonly webgpu?: WebGpuAdapterReport;
}

export interface BackendSelection {
  /** The backend ferry now runs on. */
  readonly name: BackendName;
  /** TensorFlow.js's own name for it (`tensorflow` for both tfjs-node flavours). */
  readonly tfName: string;
  readonly device: string;
  /** Every backend considered, with the reason each one that is not used was not. */
  readonly probes: readonly BackendProbe[];
  /** Kernels ferry registered for this backend (composites for missing or slow ones). */
  readonly workarounds: readonly string[];
  /** webgpu only: whether the device was created with timestamp queries (profiling) enabled. */
  readonly timestampQuery?: boolean;
}

const require = createRequire(import.meta.url);

// Production mode: no debug checks, and no console advice to install tfjs-node (ferry reports
// backends itself, in `ferry info`).
tf.env().set('PROD', true);

function tfNameOf(name: BackendName): string {
  return name === 'tensorflow-gpu' ? 'tensorflow' : name;
}

function message(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
    const pkg = /(?:package|module) '([^']+)'/.exec((e as Error).message)?.[1] ?? 'its package';
    return `${pkg} is not installed (an optional dependency; it downloads libtensorflow at install time)`;
  }
  if (e instanceof Error) {
    const first = e.message.split('\n')[0] ?? e.message;
    return first.length > 200 ? `${first.slice(0, 200)}...` : first;
  }
  return String(e);
}

/** Start-up choices for backends; resolved once by the caller (the CLI reads the environment). */
export interface BackendOptions {
  /** wasm thread-pool size; 1 = the single-threaded build. Default: all logical cores. */
  readonly wasmThreads?: number;
  /** Create the WebGPU device with timestamp queries (Dawn's allow_unsafe_apis) for profiling. */
  readonly webgpuProfiling?: boolean;
  /** ferry's WebGPU kernels and fused programs (default on; off = TensorFlow.js's own). */
  readonly webgpuFastPath?: boolean;
  /** torch intra-op threads. Default: the cores this process may use. */
  readonly torchThreads?: number;
  /** torch device: `cpu` (default) or `cuda:N` (a CUDA libtorch; a worker's `--gpus`). */
  readonly torchDevice?: string;
  /** The GPU a worker is pinned to: torch runs there when its libtorch has CUDA (else on the CPU). */
  readonly torchGpu?: number;
  /** torch's cap on CPU tensor memory, in MiB (a worker sharing its machine); default none. */
  readonly torchMemoryMiB?: number;
}

/** What loading a backend found: its device, and for webgpu the adapter. */
interface Loaded {
  readonly device: string;
  readonly webgpu?: WebGpuAdapterReport;
}

/** Loads and registers a backend's module; returns the device, or throws with a reason. */
async function load(name: BackendName, options: BackendOptions): Promise<Loaded> {
  switch (name) {
    case 'cpu':
      return { device: 'cpu (pure JavaScript)' };
    case 'torch':
      return { device: loadTorch(options) };
    case 'wasm':
      return { device: await loadWasm(options.wasmThreads ?? os.availableParallelism()) };
    case 'webgpu': {
      const webgpu = await requestAdapter(options.webgpuProfiling === true);
      return { device: webgpu.description, webgpu };
    }
    case 'tensorflow-gpu':
      await import(/* optional */ '@tensorflow/tfjs-node-gpu' as string);
      return { device: 'CUDA (libtensorflow)' };
    case 'tensorflow':
      await import(/* optional */ '@tensorflow/tfjs-node' as string);
      return { device: 'cpu (libtensorflow)' };
  }
}

/** Registers the torch backend (libtorch's kernels through ferry's addon); throws why it cannot. */
function loadTorch(options: BackendOptions): string {
  const r = registerTorchBackend({
    ...(options.torchThreads !== undefined ? { threads: options.torchThreads } : {}),
    ...(options.torchDevice !== undefined ? { device: options.torchDevice } : {}),
    ...(options.torchGpu !== undefined ? { preferGpu: options.torchGpu } : {}),
    ...(options.torchMemoryMiB !== undefined ? { memoryLimitMiB: options.torchMemoryMiB } : {}),
  });
  const dnn = r.mkldnn ? `, ${r.mkldnnVersion.replace(/ \(Git Hash N\/A\)/, '')}` : ', no oneDNN';
  return `${r.device} (libtorch ${r.version}, ${r.threads} thread${r.threads > 1 ? 's' : ''}${dnn}${r.cuda ? ', CUDA build' : ''})`;
}

/** Registers the wasm backend, multi-threaded when `wanted` > 1 and the threaded build starts. */
async function loadWasm(wanted: number): Promise<string> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const dir = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
  // The multi-threaded build cannot start its worker from a blob: URL in Node; the SIMD
  // single-threaded build is the one that works.
  wasm.setWasmPaths(`${dir}${path.sep}`);
  let threads = 1;
  if (wanted > 1 && tf.findBackend('wasm') === null) {
    try {
      threads = await startThreadedWasm(wasm, wanted);
    } catch {
      // Fall back to the single-threaded SIMD build below.
      tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      threads = 1;
    }
  }
  return `cpu (WebAssembly SIMD, ${threads} thread${threads > 1 ? 's' : ''})`;
}

/**
 * One probe per backend and process, memoised as a promise: TensorFlow.js's backend registry is
 * process-global and a backend registers once, so a second probe could not find anything else;
 * sharing the promise also makes concurrent callers wait for the one load instead of starting a
 * second. The options a backend loads with (wasm threads, WebGPU profiling) are therefore those of
 * its first probe: the process's backend options, given once by its caller (CLI or worker).
 */
const probes = new Map<BackendName, Promise<BackendProbe>>();

/** Tries to start one backend (without switching to it). Memoised per process (see `probes`). */
export function probeBackend(name: BackendName, options: BackendOptions = {}): Promise<BackendProbe> {
  let probe = probes.get(name);
  if (!probe) {
    probe = tryBackend(name, options);
    probes.set(name, probe);
  }
  return probe;
}

async function tryBackend(name: BackendName, options: BackendOptions): Promise<BackendProbe> {
  try {
    const { device, webgpu } = await load(name, options);
    const before = tf.getBackend();
    const ok = await tf.setBackend(tfNameOf(name));
    if (!ok) throw new Error('TensorFlow.js could not initialise it');
    if (name === 'tensorflow-gpu' && !isCudaBuild()) throw new Error('libtensorflow was built without CUDA');
    if (before && before !== tfNameOf(name)) await tf.setBackend(before);
    return { name, available: true, reason: null, device, ...(webgpu ? { webgpu } : {}) };
  } catch (e) {
    return { name, available: false, reason: message(e) };
  }
}

function isCudaBuild(): boolean {
  const b = tf.backend() as unknown as { binding?: { isUsingGpuDevice?: () => boolean } };
  return b.binding?.isUsingGpuDevice?.() ?? false;
}

/** Probes every backend; used by `ferry info` (with the options it selected with). */
export async function probeAllBackends(options: BackendOptions = {}): Promise<BackendProbe[]> {
  const out: BackendProbe[] = [];
  for (const name of BACKEND_NAMES) out.push(await probeBackend(name, options));
  return out;
}

/**
 * The one selection point. `auto` takes the first backend in BACKEND_NAMES order that initialises;
 * an explicit name either starts or fails with FERRY_ERR_BACKEND_UNAVAILABLE and the reason.
 */
export async function selectBackend(request: BackendRequest, options: BackendOptions = {}): Promise<BackendSelection> {
  if (request !== 'auto' && !(BACKEND_NAMES as readonly string[]).includes(request)) {
    throw new InvalidArgumentError(
      `unknown backend "${String(request)}"; use auto or one of ${BACKEND_NAMES.join(', ')}`,
    );
  }
  const { chosen, considered } = await choose(request, options);
  await tf.setBackend(tfNameOf(chosen.name));
  await tf.ready();
  if (chosen.name === 'webgpu') watchWebGpuDevice();
  return {
    name: chosen.name,
    tfName: tfNameOf(chosen.name),
    device: chosen.device ?? chosen.name,
    probes: considered,
    // Registered once per backend; later calls return the same lines.
    workarounds:
      chosen.name === 'webgpu'
        ? setWebGpuFastPath(options.webgpuFastPath !== false)
        : registerBackendWorkarounds(tfNameOf(chosen.name)),
    ...(chosen.name === 'webgpu'
      ? { timestampQuery: (tf.backend() as { supportTimestampQuery?: boolean }).supportTimestampQuery === true }
      : {}),
  };
}

/** Probes the candidates in order until one starts; every candidate is reported, with why it is not used. */
async function choose(
  request: BackendRequest,
  options: BackendOptions,
): Promise<{ chosen: BackendProbe; considered: BackendProbe[] }> {
  const candidates: readonly BackendName[] = request === 'auto' ? BACKEND_NAMES : [request];
  const considered: BackendProbe[] = [];
  let chosen: BackendProbe | undefined;
  for (const name of candidates) {
    if (chosen) {
      considered.push({ name, available: false, reason: `not tried: ${chosen.name} comes first` });
      continue;
    }
    if (request === 'auto' && name === 'webgpu' && !probes.has('webgpu')) {
      const pre = await preflightWebGpu(options.webgpuProfiling === true);
      if (pre?.software) {
        // Decided without creating the adapter here (a software Vulkan driver prints warnings).
        considered.push(passedOver({ name, available: true, reason: null, device: pre.description, webgpu: pre }));
        continue;
      }
    }
    const probe = await probeBackend(name, options);
    if (request === 'auto' && probe.available && probe.webgpu?.software) {
      considered.push(passedOver(probe));
      continue;
    }
    considered.push(probe);
    if (probe.available) chosen = probe;
  }
  if (!chosen) {
    const last = considered[considered.length - 1];
    throw new BackendUnavailableError(request, last?.reason ?? 'nothing initialised');
  }
  return { chosen, considered };
}

/** Correct but slower than torch or wasm: only an explicit --backend webgpu uses a CPU adapter. */
function passedOver(probe: BackendProbe): BackendProbe {
  return {
    ...probe,
    available: false,
    reason: `software adapter (${probe.device ?? 'CPU'}): slower than the CPU backends; --backend webgpu uses it`,
  };
}

export function isBackendName(s: string): s is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(s);
}
