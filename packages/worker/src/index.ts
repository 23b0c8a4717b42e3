/** @ferry/worker: the per-GPU worker process's logic (engine calls; the coordinator through @ferry/client). */
export { FerryWorker, type WorkerLifecycle, type WorkerOptions } from './worker.js';
export { cellConfigFromSpec } from './spec.js';
export {
  DEFAULT_PEER_LIMITS,
  PeerRing,
  PeerServer,
  type PeerLimits,
  type PeerServerOptions,
  type PeerTls,
} from './peer.js';
