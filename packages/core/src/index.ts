/**
 * @ferry/core: the training engine. No network code; the worker and CLI call into it. Backend
 * kernels are not part of it: they are `@ferry/core/internal` (src/internal.ts).
 */
export * from './errors.js';
export { Rng, type RngState } from './util/rng.js';
export { readNpy, writeNpy, nchwToNhwc } from './util/npy.js';
export {
  BACKEND_NAMES,
  isBackendName,
  probeAllBackends,
  probeBackend,
  selectBackend,
  type BackendName,
  type BackendOptions,
  type BackendProbe,
  type BackendRequest,
  type BackendSelection,
} from './backends/select.js';
export { describeAdapter, type WebGpuAdapterReport } from './backends/webgpu-adapter.js';
export { assertDeviceHealthy } from './backends/device-health.js';
// The kernels themselves (workarounds, composites, fused programs, WebGPU ops) are internal:
// `@ferry/core/internal` (src/internal.ts), for ferry's tests and benchmarks.
export { describeWorkarounds } from './backends/workarounds.js';
export { listNvidiaGpus, type GpuDevice } from './backends/devices.js';
export type { ParamSpec, ParamKind, ForwardContext, BnBatchStats } from './models/layers.js';
export { SpecBuilder, globalAvgPool, relu } from './models/layers.js';
export { countParams, paramsOfStage, stageOfParam, type ModelDef, type Stage } from './models/model.js';
export { buildModel, getZooEntry, listModels, modelNames, type WeightSource, type ZooEntry } from './models/zoo.js';
export { makeDivisible } from './models/mobilenet-v2.js';
export type { HostTensor, StateDict } from './weights/host-tensor.js';
export { readPth } from './weights/pth.js';
export { readSafetensors, writeSafetensors } from './weights/safetensors.js';
export { parseWeights, readWeightsFile, resolveWeights, type ResolvedWeights } from './weights/load.js';
export { torchToTf, tfToTorch } from './weights/layout.js';
export { download, type DownloadOptions, type DownloadResult } from './weights/download.js';
export { Network, firstTrainableStage, parseStrategy } from './train/network.js';
export { Sgd, type SgdOptions } from './train/sgd.js';
export {
  adaptBatchNorm,
  batchNormStatNames,
  batchNormStatsHash,
  type AdaptBatchNormOptions,
} from './train/batchnorm.js';
export {
  ArrayBatchSource,
  applyShard,
  shardSize,
  streamSeed,
  type Batch,
  type BatchSource,
  type ShardSpec,
} from './train/data.js';
export { DEFAULT_TRAIN_CONFIG, Trainer, configHash, type TrainConfig, type TrainerOptions } from './train/trainer.js';
/** Softmax cross-entropy, mean over the batch (torch.nn.CrossEntropyLoss); libtorch's fused kernels on torch. */
export { softmaxCrossEntropy as crossEntropy } from './backends/fused.js';
export { readCheckpoint, saveCheckpoint, CHECKPOINT_FORMAT, type CheckpointMeta } from './train/checkpoint.js';
export type { AllReduceShare, EpochMetrics, TrainProgress, TrainResult } from './train/result.js';
export * as metrics from './train/metrics.js';
export { tfjsVersion } from './version.js';
export {
  IMAGENET_MEAN,
  IMAGENET_STD,
  decodeRgb,
  resizedSize,
  toGray3,
  type ColorMode,
  type RgbImage,
} from './data/image.js';
export { transformImage, normalise } from './data/pipeline.js';
export {
  centerCropBox,
  pyRound,
  randomResizedCropBox,
  studyTransforms,
  trainViewParams,
  type CropBox,
  type TransformSpec,
} from './data/transforms.js';
export {
  IMAGE_EXTENSIONS,
  isImageFile,
  openImageFolder,
  stratifiedSplit,
  type ImageFolder,
  type Sample,
} from './data/folder.js';
export { DecodePool, type DecodeResult } from './data/decode-pool.js';
export { ImageFolderSource, type SkippedFile, type ImageFolderSourceOptions } from './data/folder-source.js';
export {
  FeatureCache,
  computeFeatures,
  contentHash,
  featureKeyHash,
  frozenFeatureKey,
  sha256File,
  type FeatureKey,
  type FeatureView,
} from './data/feature-cache.js';
export {
  DEFAULT_CELL,
  autoMicroBatch,
  runCell,
  validateCell,
  type CellConfig,
  type CellResult,
  type CellRunOptions,
} from './cell.js';
export {
  DEFAULT_ADVISE,
  adviseDataset,
  type AdviseConfig,
  type AdviseRunOptions,
  type DatasetAdvice,
} from './advise/advise.js';
export {
  batchNormShift,
  gaussianHellinger,
  holdOut,
  knnAccuracy,
  nearestCentroidAccuracy,
  type BatchNormLayerStats,
} from './advise/measure.js';
export {
  DEMO_CLASSES,
  DEMO_DEFAULTS,
  DEMO_SOURCE_CLASSES,
  writeDemoDataset,
  writeDemoSourceDataset,
  type DemoOptions,
} from './data/demo.js';
export {
  IMPORT_KINDS,
  datasetStats,
  extractZip,
  grayCopy,
  importDataset,
  splitFolder,
  type DatasetStats,
  type ImportKind,
  type SplitReport,
} from './data/tools.js';
export { DATASET_SOURCES, type DatasetSource } from './data/sources.js';
export { datasetFingerprint } from './data/fingerprint.js';
export {
  CHUNK_ELEMENTS,
  CollectiveError,
  Mailbox,
  broadcastFromRank0,
  distributedShard,
  memoryRing,
  ringAllReduceMean,
  ringAllReduceSum,
  segments,
  type RingTransport,
} from './train/collective.js';
