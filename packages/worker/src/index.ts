/** @ferry/worker: the per-GPU worker process's logic (engine calls + thin gRPC client). */
export { FerryWorker, type WorkerLifecycle, type WorkerOptions } from './worker.js';
export {
  adminClient,
  coordinatorClient,
  ferryErrorFromGrpc,
  getSweepAll,
  metadataFor,
  unary,
  watchCoordinatorEvents,
  type ConnectionOptions,
} from './client.js';
export { cellConfigFromSpec } from './spec.js';
export {
  DEFAULT_PEER_LIMITS,
  GrpcRing,
  PeerServer,
  type PeerLimits,
  type PeerServerOptions,
  type PeerTls,
} from './peer.js';
