/** @ferry/worker: the per-GPU worker process's logic (engine calls + thin gRPC client). */
export { FerryWorker, type WorkerLifecycle, type WorkerOptions } from './worker.js';
export { adminClient, coordinatorClient, ferryErrorFromGrpc, metadataFor, unary, type ConnectionOptions } from './client.js';
export { cellConfigFromSpec } from './spec.js';
export { GrpcRing, PeerServer } from './peer.js';
