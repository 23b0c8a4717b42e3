import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

/**
 * WebGPU adapter checks: which adapter this machine offers and whether it is a software one, asked
 * in this process (for the backend probe) or in a child process (for `auto`, before creating it).
 */

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

interface GpuLike {
  requestAdapter(): Promise<unknown>;
}

export interface AdapterLike {
  readonly info?: { vendor?: string; architecture?: string; device?: string; description?: string };
  readonly features?: ReadonlySet<string>;
  readonly isFallbackAdapter?: boolean;
}

const require = createRequire(import.meta.url);

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

/** Dawn's flags: timestamp queries (allow_unsafe_apis) when profiling. */
function dawnFlags(profiling: boolean): string[] {
  return profiling ? ['enable-dawn-features=allow_unsafe_apis'] : [];
}

/**
 * This process's adapter, described; throws with the reason when there is none. Registers
 * TensorFlow.js's WebGPU backend (which then creates its device on this adapter's GPU).
 */
export async function requestAdapter(profiling: boolean): Promise<WebGpuAdapterReport> {
  const gpu = await webGpu(profiling);
  const adapter = (await gpu.requestAdapter()) as AdapterLike | null;
  if (adapter === null) throw new Error('no WebGPU adapter found (no GPU, or no Vulkan/Metal/D3D12 driver)');
  await import('@tensorflow/tfjs-backend-webgpu');
  return describeAdapter(adapter);
}

/**
 * navigator.gpu: the host's, or Dawn's (the `webgpu` package) installed as the global TensorFlow.js
 * looks for. Memoised: navigator is process-global and TF.js creates its device from it once, so
 * every caller must see the same instance; the first call's profiling flag is the one Dawn starts
 * with (selectBackend is called once per process with the process's options).
 */
function webGpu(profiling: boolean): Promise<GpuLike> {
  gpu ??= installWebGpu(profiling);
  return gpu;
}
let gpu: Promise<GpuLike> | undefined;

async function installWebGpu(profiling: boolean): Promise<GpuLike> {
  const g = globalThis as { navigator?: { gpu?: GpuLike } };
  if (g.navigator?.gpu) return g.navigator.gpu;
  const mod = (await import(/* optional */ 'webgpu' as string)) as {
    create: (flags: string[]) => GpuLike;
    globals: Record<string, unknown>;
  };
  Object.assign(globalThis, mod.globals);
  const created = mod.create(dawnFlags(profiling));
  if (!g.navigator)
    Object.defineProperty(globalThis, 'navigator', { value: { gpu: created }, configurable: true, writable: true });
  else Object.defineProperty(g.navigator, 'gpu', { value: created, configurable: true });
  return created;
}

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
 * reports why). Memoised: the machine's adapter does not change while the process runs, and
 * whether it is a software one does not depend on the flags, so every caller may share the answer.
 */
export function preflightWebGpu(profiling: boolean): Promise<WebGpuAdapterReport | undefined> {
  preflight ??= askChildForAdapter(profiling);
  return preflight;
}
let preflight: Promise<WebGpuAdapterReport | undefined> | undefined;

async function askChildForAdapter(profiling: boolean): Promise<WebGpuAdapterReport | undefined> {
  if ((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) return undefined;
  let url: string;
  try {
    url = pathToFileURL(require.resolve('webgpu')).href;
  } catch {
    return undefined;
  }
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', PREFLIGHT, url, JSON.stringify(dawnFlags(profiling))],
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
