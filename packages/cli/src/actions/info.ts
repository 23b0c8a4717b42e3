import { describeWorkarounds, listNvidiaGpus, probeAllBackends, selectBackend, tfjsVersion } from '@ferry/core';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { out, table, type CliIo } from '../io.js';
import { FERRY_VERSION } from '../version.js';

export interface InfoOptions {
  readonly backend: string;
  readonly json: boolean;
}

/** The chosen backend, why each other one is unavailable, devices and versions. */
export async function infoCommand(opts: InfoOptions, io: CliIo): Promise<number> {
  const options = backendOptionsFromEnv(io);
  const chosen = await selectBackend(backendRequest(opts.backend), options);
  const probes = await probeAllBackends(options);
  const gpus = await listNvidiaGpus();
  // The WebGPU adapter whenever one answered, chosen or not: what it is, ferry's kernels for it,
  // and whether kernel times can be profiled.
  const adapter = probes.find((p) => p.name === 'webgpu')?.webgpu;
  const webgpu = adapter
    ? {
        adapter: adapter.description,
        software: adapter.software,
        fastKernels: describeWorkarounds('webgpu'),
        timestampQuery: {
          offeredByAdapter: adapter.timestampQueryOffered,
          enabled: chosen.name === 'webgpu' ? chosen.timestampQuery === true : null,
        },
      }
    : null;
  const report = {
    ferry: FERRY_VERSION,
    node: process.versions.node,
    tfjs: tfjsVersion,
    backend: { name: chosen.name, device: chosen.device, registeredKernels: chosen.workarounds },
    backends: probes.map((p) => ({ name: p.name, available: p.available, reason: p.reason, device: p.device ?? null })),
    webgpu,
    gpus: gpus.gpus,
    gpuReason: gpus.reason ?? null,
  };
  if (opts.json) {
    out(io, JSON.stringify(report, null, 2));
    return 0;
  }
  out(io, `ferry ${report.ferry} (node ${report.node}, TensorFlow.js ${report.tfjs})`);
  out(io, `backend: ${chosen.name} on ${chosen.device}`);
  for (const k of chosen.workarounds) out(io, `  kernel: ${k}`);
  out(io);
  out(
    io,
    table([
      ['BACKEND', 'STATUS', 'DETAIL'],
      ...probes.map((p) => [
        p.name,
        p.name === chosen.name ? 'chosen' : p.available ? 'available' : 'unavailable',
        p.available
          ? `${p.device ?? ''}${p.webgpu?.software ? ' [software adapter: auto passes it over]' : ''}`
          : (p.reason ?? ''),
      ]),
    ]),
  );
  out(io);
  if (webgpu) {
    out(io, `webgpu adapter: ${webgpu.adapter}${webgpu.software ? ' (software: runs on the CPU)' : ''}`);
    for (const k of webgpu.fastKernels) out(io, `  webgpu kernel: ${k}`);
    const ts = webgpu.timestampQuery;
    const enabled =
      ts.enabled === null
        ? 'select webgpu to see if enabled'
        : ts.enabled
          ? 'enabled'
          : 'not enabled (FERRY_WEBGPU_PROFILE=1 enables them)';
    out(
      io,
      `  timestamp queries (kernel times in profiles): ${ts.offeredByAdapter ? 'offered by the adapter' : 'not offered by the adapter'}, ${enabled}`,
    );
    out(io);
  }
  if (gpus.gpus.length === 0) out(io, `GPUs: none (${gpus.reason ?? 'nvidia-smi lists none'})`);
  for (const g of gpus.gpus) out(io, `GPU ${g.index}: ${g.name}, ${g.memoryMiB} MiB, driver ${g.driver}`);
  return 0;
}
