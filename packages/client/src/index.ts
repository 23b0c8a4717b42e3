/**
 * @ferry/client: the one way to talk to a coordinator, for the worker, the CLI and the dashboard:
 * connection (address, TLS, token), deadlines, errors as FerryErrors, backoff, the admin calls,
 * the Events.Watch feed, and checkpoint transfer in both directions (the coordinator uses the
 * same sender and receiver).
 */
export {
  adminClient,
  channelOptions,
  coordinatorClient,
  credentials,
  eventsClient,
  ferryErrorFromGrpc,
  metadataFor,
  unary,
  type ConnectionOptions,
} from './connection.js';
export { DEFAULT_BACKOFF, isUnavailable, withBackoff, type BackoffPolicy } from './backoff.js';
export { downloadArtifact, getSweepAll } from './admin.js';
export { fetchSourceWeights, sourceWeightsFile } from './source-weights.js';
export { watchCoordinatorEvents } from './watch.js';
export {
  CHUNK_BYTES,
  ChunkSink,
  fileChunks,
  receiveFile,
  sendChunks,
  type ChunkHeader,
  type ChunkSource,
  type ChunkStream,
} from './transfer.js';
