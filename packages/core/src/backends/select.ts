import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// Gradients are registered separately from the ops, and tfjs-core's Node build does not ship them:
// the union package's Node build registers them (kernel registries are process-global).
import '@tensorflow/tfjs';
import { BackendUnavailableError, DeviceError, InvalidArgumentError } from '../errors.js';
import { startThreadedWasm } from './wasm-threads.js';
import { registerBackendWorkarounds, setWebGpuFastPath } from './workarounds.js';

/** Backends in the order `auto` prefers them (fastest first). */
export const BACKEND_NAMES = ['tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
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

/** A WebGPU adapter as `ferry info` reports it. */
export interface WebGpuAdapterReport {
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  /**
   * A CPU implementation (Mesa's llvmpipe/lavapipe, SwiftShader, WARP): correct, and how the
   * tests run WebGPU without a GPU, but slower than wasm, so `auto` passes it over.
   */
  readonly software: boolean;
  /** The adapter offers `timestamp-query` (kernel times in tf.profile). */
  readonly timestampQueryOffered: boolean;
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
}

let options: BackendOptions = {};
let wasmThreadsObtained = 1;

/** Loads and registers a backend's module; returns the device name, or throws with a reason. */
async function load(name: BackendName): Promise<string> {
  switch (name) {
    case 'cpu':
      return 'cpu (pure JavaScript)';
    case 'wasm': {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      const dir = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
      // The multi-threaded build cannot start its worker from a blob: URL in Node; the SIMD
      // single-threaded build is the one that works.
      wasm.setWasmPaths(`${dir}${path.sep}`);
      const wanted = options.wasmThreads ?? os.availableParallelism();
      if (wanted > 1 && tf.findBackend('wasm') === null) {
        try {
          wasmThreadsObtained = await startThreadedWasm(wasm, wanted);
        } catch {
          // Fall back to the single-threaded SIMD build below.
          tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
          wasmThreadsObtained = 1;
        }
      }
      return `cpu (WebAssembly SIMD, ${wasmThreadsObtained} thread${wasmThreadsObtained > 1 ? 's' : ''})`;
    }
    case 'webgpu': {
      const gpu = await getWebGpu();
      const adapter = (await gpu.requestAdapter()) as AdapterLike | null;
      if (adapter === null) throw new Error('no WebGPU adapter found (no GPU, or no Vulkan/Metal/D3D12 driver)');
      await import('@tensorflow/tfjs-backend-webgpu');
      webgpuReport = describeAdapter(adapter);
      return webgpuReport.description;
    }
    case 'tensorflow-gpu':
      await import(/* optional */ '@tensorflow/tfjs-node-gpu' as string);
      return 'CUDA (libtensorflow)';
    case 'tensorflow':
      await import(/* optional */ '@tensorflow/tfjs-node' as string);
      return 'cpu (libtensorflow)';
  }
}

interface GpuLike {
  requestAdapter(): Promise<unknown>;
}

interface AdapterLike {
  readonly info?: { vendor?: string; architecture?: string; device?: string; description?: string };
  readonly features?: ReadonlySet<string>;
  readonly isFallbackAdapter?: boolean;
}

const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|software|microsoft basic render|warp/i;

/** Pure: the report for an adapter (exported for tests). */
export function describeAdapter(adapter: AdapterLike): WebGpuAdapterReport {
  const info = adapter.info ?? {};
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s): s is string => !!s);
  const description = parts.length > 0 ? parts.join(' ') : 'webgpu adapter';
  return {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    description,
    software: adapter.isFallbackAdapter === true || SOFTWARE_ADAPTER.test(description),
    timestampQueryOffered: adapter.features?.has('timestamp-query') ?? false,
  };
}

let webgpuReport: WebGpuAdapterReport | undefined;

const PREFLIGHT = `
const [url, flags] = process.argv.slice(1);
const { create } = await import(url);
const a = await create(JSON.parse(flags)).requestAdapter();
const info = a?.info ?? {};
process.stdout.write(JSON.stringify(a ? { info: { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description }, isFallbackAdapter: a.isFallbackAdapter === true, features: [...a.features] } : null));
process.exit(0);
`;

/**
 * What WebGPU adapter this machine offers, asked in a child process: for `auto`, a software
 * adapter is passed over without ever being created in this process (Mesa's lavapipe prints
 * warnings on stderr when it is). undefined when the child cannot tell (the in-process probe then
 * reports why).
 */
function preflightWebGpu(): Promise<WebGpuAdapterReport | undefined> {
  preflight ??= askChildForAdapter();
  return preflight;
}

/** Asked once per process, like the in-process probes. */
let preflight: Promise<WebGpuAdapterReport | undefined> | undefined;

async function askChildForAdapter(): Promise<WebGpuAdapterReport | undefined> {
  if ((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) return undefined;
  let url: string;
  try {
    url = pathToFileURL(require.resolve('webgpu')).href;
  } catch {
    return undefined;
  }
  const flags = options.webgpuProfiling ? ['enable-dawn-features=allow_unsafe_apis'] : [];
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', PREFLIGHT, url, JSON.stringify(flags)],
      { timeout: 20_000 },
      (err, stdout) => {
        if (err) return resolve(undefined);
        try {
          const adapter = JSON.parse(stdout) as (AdapterLike & { features: string[] }) | null;
          resolve(adapter ? describeAdapter({ ...adapter, features: new Set(adapter.features) }) : undefined);
        } catch {
          resolve(undefined);
        }
      },
    );
  });
}

let webgpuInstance: GpuLike | undefined;

async function getWebGpu(): Promise<GpuLike> {
  if (webgpuInstance) return webgpuInstance;
  const g = globalThis as { navigator?: { gpu?: GpuLike } };
  if (g.navigator?.gpu) {
    webgpuInstance = g.navigator.gpu;
    return webgpuInstance;
  }
  const mod = (await import(/* optional */ 'webgpu' as string)) as {
    create: (flags: string[]) => GpuLike;
    globals: Record<string, unknown>;
  };
  Object.assign(globalThis, mod.globals);
  const flags = options.webgpuProfiling ? ['enable-dawn-features=allow_unsafe_apis'] : [];
  const gpu = mod.create(flags);
  if (!g.navigator)
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  else Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  webgpuInstance = gpu;
  return gpu;
}

const probeCache = new Map<BackendName, BackendProbe>();

/** Tries to start one backend (without switching to it). Cached per process. */
export async function probeBackend(name: BackendName): Promise<BackendProbe> {
  const cached = probeCache.get(name);
  if (cached) return cached;
  let probe: BackendProbe;
  try {
    const device = await load(name);
    const before = tf.getBackend();
    const ok = await tf.setBackend(tfNameOf(name));
    if (!ok) throw new Error('TensorFlow.js could not initialise it');
    if (name === 'tensorflow-gpu' && !isCudaBuild()) throw new Error('libtensorflow was built without CUDA');
    if (before && before !== tfNameOf(name)) await tf.setBackend(before);
    probe = {
      name,
      available: true,
      reason: null,
      device,
      ...(name === 'webgpu' && webgpuReport ? { webgpu: webgpuReport } : {}),
    };
  } catch (e) {
    probe = { name, available: false, reason: message(e) };
  }
  probeCache.set(name, probe);
  return probe;
}

function isCudaBuild(): boolean {
  const b = tf.backend() as unknown as { binding?: { isUsingGpuDevice?: () => boolean } };
  return b.binding?.isUsingGpuDevice?.() ?? false;
}

/** Probes every backend; used by `ferry info`. */
export async function probeAllBackends(): Promise<BackendProbe[]> {
  const out: BackendProbe[] = [];
  for (const name of BACKEND_NAMES) out.push(await probeBackend(name));
  return out;
}

/**
 * The one selection point. `auto` takes the first backend in BACKEND_NAMES order that initialises;
 * an explicit name either starts or fails with FERRY_ERR_BACKEND_UNAVAILABLE and the reason.
 */
export async function selectBackend(request: BackendRequest, opts?: BackendOptions): Promise<BackendSelection> {
  if (opts) options = opts;
  if (request !== 'auto' && !(BACKEND_NAMES as readonly string[]).includes(request)) {
    throw new InvalidArgumentError(
      `unknown backend "${String(request)}"; use auto or one of ${BACKEND_NAMES.join(', ')}`,
    );
  }
  const candidates: readonly BackendName[] = request === 'auto' ? BACKEND_NAMES : [request];
  const probes: BackendProbe[] = [];
  let chosen: BackendProbe | undefined;
  for (const name of candidates) {
    if (chosen) {
      probes.push({ name, available: false, reason: `not tried: ${chosen.name} comes first` });
      continue;
    }
    if (request === 'auto' && name === 'webgpu' && !probeCache.has('webgpu')) {
      const pre = await preflightWebGpu();
      if (pre?.software) {
        // Decided without creating the adapter here (a software Vulkan driver prints warnings).
        probes.push(passedOver({ name, available: true, reason: null, device: pre.description, webgpu: pre }));
        continue;
      }
    }
    const probe = await probeBackend(name);
    if (request === 'auto' && probe.available && probe.webgpu?.software) {
      probes.push(passedOver(probe));
      continue;
    }
    probes.push(probe);
    if (probe.available) chosen = probe;
  }
  if (!chosen) {
    const last = probes[probes.length - 1];
    throw new BackendUnavailableError(request, last?.reason ?? 'nothing initialised');
  }
  await tf.setBackend(tfNameOf(chosen.name));
  await tf.ready();
  if (chosen.name === 'webgpu') watchWebGpuDevice();
  return {
    name: chosen.name,
    tfName: tfNameOf(chosen.name),
    device: chosen.device ?? chosen.name,
    probes,
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

/** Correct but slower than wasm: only an explicit --backend webgpu uses a CPU adapter. */
function passedOver(probe: BackendProbe): BackendProbe {
  return {
    ...probe,
    available: false,
    reason: `software adapter (${probe.device ?? 'CPU'}): slower than wasm; --backend webgpu uses it`,
  };
}

/** Errors the WebGPU device reported since selection (validation, out-of-memory, loss). */
const deviceErrors: string[] = [];
let watched: unknown;

/**
 * WebGPU reports invalid programs and out-of-memory asynchronously, as events, and the commands
 * concerned then do nothing: the results would be silently wrong. ferry records every such
 * report; assertDeviceHealthy turns them into an error at the next read-back.
 */
function watchWebGpuDevice(): void {
  const device = (tf.backend() as { device?: EventTarget & { lost?: Promise<{ message?: string }> } }).device;
  if (!device || watched === device) return;
  watched = device;
  device.addEventListener('uncapturederror', (e) => {
    const err = (e as Event & { error?: { message?: string } }).error;
    if (deviceErrors.length < 20) deviceErrors.push(err?.message?.split('\n')[0] ?? 'unknown device error');
  });
  void device.lost?.then((info) => deviceErrors.push(`device lost: ${info.message ?? ''}`));
}

/** Throws FERRY_ERR_DEVICE if the WebGPU device reported an error since the last check. */
export function assertDeviceHealthy(): void {
  if (deviceErrors.length === 0) return;
  const all = deviceErrors.splice(0);
  throw new DeviceError(`the WebGPU device reported ${all.length} error(s); first: ${all[0]}`);
}

export function isBackendName(s: string): s is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(s);
}
