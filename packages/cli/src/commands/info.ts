import { listNvidiaGpus, probeAllBackends, selectBackend, tfjsVersion, type BackendRequest } from '@ferry/core';
import { Args } from '../args.js';
import { out, table, type CliIo } from '../io.js';
import { FERRY_VERSION } from '../version.js';

const USAGE = 'ferry info [--backend auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu] [--json]';

/** The chosen backend, why each other one is unavailable, devices and versions. */
export async function infoCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(argv, { backend: { type: 'string' }, json: { type: 'boolean' } }, USAGE);
  const probes = await probeAllBackends();
  const chosen = await selectBackend((args.string('backend') ?? 'auto') as BackendRequest);
  const gpus = await listNvidiaGpus();
  const report = {
    ferry: FERRY_VERSION,
    node: process.versions.node,
    tfjs: tfjsVersion,
    backend: { name: chosen.name, device: chosen.device, registeredKernels: chosen.workarounds },
    backends: probes.map((p) => ({ name: p.name, available: p.available, reason: p.reason, device: p.device ?? null })),
    gpus: gpus.gpus,
    gpuReason: gpus.reason ?? null,
  };
  if (args.flag('json')) {
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
      ...probes.map((p) => [p.name, p.name === chosen.name ? 'chosen' : p.available ? 'available' : 'unavailable', p.available ? (p.device ?? '') : (p.reason ?? '')]),
    ]),
  );
  out(io);
  if (gpus.gpus.length === 0) out(io, `GPUs: none (${gpus.reason ?? 'nvidia-smi lists none'})`);
  for (const g of gpus.gpus) out(io, `GPU ${g.index}: ${g.name}, ${g.memoryMiB} MiB, driver ${g.driver}`);
  return 0;
}
