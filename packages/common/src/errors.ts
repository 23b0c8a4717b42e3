/**
 * The one registry of ferry's error codes: for each, the gRPC status an adapter answers with when
 * the error crosses a process boundary, the CLI's exit code, when it is raised and the fix in one
 * line. docs/errors.md is checked against it (packages/common/test/errors.test.ts).
 */

/** gRPC status codes (the numbers every gRPC implementation uses), so that common needs no gRPC import. */
export const GRPC_STATUS = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type GrpcStatusName = keyof typeof GRPC_STATUS;

export interface ErrorDefinition {
  readonly grpc: GrpcStatusName;
  /** The CLI's exit status: 2 for an error ferry raises on purpose (the message says what to do), 1 for a bug. */
  readonly exit: 1 | 2;
  /**
   * When a worker meets it while running a cell: `never` fails the cell at once (the same input
   * fails anywhere); `elsewhere` offers the cell to other workers only, without using an attempt
   * (this worker's copy, device or backend is the problem); `again` retries it, anywhere, up to the
   * cell's attempts.
   */
  readonly retry: 'never' | 'elsewhere' | 'again';
  /** When it is raised. */
  readonly when: string;
  /** What to do, in one line. */
  readonly fix: string;
}

export const ERRORS = {
  FERRY_ERR_INVALID_ARGUMENT: {
    grpc: 'INVALID_ARGUMENT',
    exit: 2,
    retry: 'never',
    when: 'a flag, option or hyper-parameter cannot be used (`lr` <= 0, unknown strategy, wrong class count), or an input file is malformed (`.npy`)',
    fix: 'fix the value the message names',
  },
  FERRY_ERR_UNKNOWN_MODEL: {
    grpc: 'NOT_FOUND',
    exit: 2,
    retry: 'never',
    when: 'a model name is not in the zoo',
    fix: 'pick one of `ferry models`',
  },
  FERRY_ERR_BACKEND_UNAVAILABLE: {
    grpc: 'FAILED_PRECONDITION',
    exit: 2,
    retry: 'elsewhere',
    when: 'the requested TensorFlow.js backend cannot start (package not installed, no GPU adapter)',
    fix: '`ferry info` lists every backend and why it is unavailable; use `--backend auto`',
  },
  FERRY_ERR_NATIVE_KERNEL: {
    grpc: 'INTERNAL',
    exit: 1,
    retry: 'elsewhere',
    when: "a kernel of the native torch backend failed in libtorch (a shape it refuses, out of memory) or ferry's torch backend does not implement the kernel (named in the message)",
    fix: "the message names the kernel and libtorch's reason; out of memory: a smaller batch (`batchSize`, `microBatch`) or a larger `FERRY_TORCH_MEMORY_MIB`; an unimplemented kernel: `--backend wasm`, and report it",
  },
  FERRY_ERR_WEIGHTS_CORRUPT: {
    grpc: 'DATA_LOSS',
    exit: 2,
    retry: 'elsewhere',
    when: 'a `.pth`/`.safetensors`/checkpoint is truncated or malformed: bad header fields, offsets outside the data, a tensor larger than its storage, a zip entry that inflates past its declared size or the limit',
    fix: 'download again (`ferry weights pull` resumes and verifies)',
  },
  FERRY_ERR_WEIGHTS_MISMATCH: {
    grpc: 'FAILED_PRECONDITION',
    exit: 2,
    retry: 'never',
    when: 'a weights file does not fit the model: missing, unexpected or mis-shaped tensors (each named)',
    fix: 'use the weights of the architecture you train; a classifier of another size is replaced automatically',
  },
  FERRY_ERR_UNSUPPORTED_FORMAT: {
    grpc: 'UNIMPLEMENTED',
    exit: 2,
    retry: 'never',
    when: 'a legacy (pre-1.6) torch file, big-endian tensors, an unknown dtype',
    fix: 're-save with a current torch: `torch.save(torch.load(f), f2)`',
  },
  FERRY_ERR_DOWNLOAD: {
    grpc: 'UNAVAILABLE',
    exit: 2,
    retry: 'again',
    when: 'a download failed, broke off, or its SHA-256 did not match',
    fix: 'run the command again: a partial download resumes; a checksum mismatch removed the file',
  },
  FERRY_ERR_NON_FINITE_LOSS: {
    grpc: 'ABORTED',
    exit: 2,
    retry: 'again',
    when: 'the training loss became NaN or infinite (epoch and step named)',
    fix: 'lower the learning rate; check the data for NaN',
  },
  FERRY_ERR_CHECKPOINT: {
    grpc: 'FAILED_PRECONDITION',
    exit: 2,
    retry: 'again',
    when: 'a checkpoint belongs to another configuration or is unreadable',
    fix: 'use a fresh `--out` directory, or the configuration that wrote it',
  },
  FERRY_ERR_IMAGE_UNREADABLE: {
    grpc: 'INVALID_ARGUMENT',
    exit: 2,
    retry: 'again',
    when: 'an image cannot be decoded',
    fix: "the message names the file and the decoder's reason (during training such files are skipped with a warning instead)",
  },
  FERRY_ERR_DATASET: {
    grpc: 'FAILED_PRECONDITION',
    exit: 2,
    retry: 'again',
    when: 'a dataset folder cannot be trained on: missing, no `train/`+`val/`, fewer than 2 classes, an empty class folder, classes differing between splits; a dataset archive that inflates past the limits',
    fix: 'the message says what to fix; `ferry data split` makes train/val folders',
  },
  FERRY_ERR_DATASET_MISMATCH: {
    grpc: 'FAILED_PRECONDITION',
    exit: 2,
    retry: 'elsewhere',
    when: "a worker's copy of a sweep's dataset is missing or differs (file list and sizes) from the copy the sweep pinned",
    fix: "sync the dataset under that worker's `--data-root`; the cell is retried elsewhere, up to its attempts",
  },
  FERRY_ERR_DEVICE: {
    grpc: 'INTERNAL',
    exit: 2,
    retry: 'elsewhere',
    when: 'the WebGPU device reported an error: a program failed validation, memory ran out, or the device was lost; results computed since are wrong, so training stops',
    fix: "the message carries the device's text; `ferry info` shows the adapter; `FERRY_WEBGPU_FAST=0` runs TensorFlow.js's own kernels to tell ferry's programs from the device",
  },
  FERRY_ERR_COLLECTIVE: {
    grpc: 'DEADLINE_EXCEEDED',
    exit: 2,
    retry: 'again',
    when: "a data-parallel group's gradient ring missed its deadline or lost a member",
    fix: 'nothing by hand: the coordinator re-forms the group and the cell resumes from its checkpoint; check the Peer ports if it recurs',
  },
  FERRY_ERR_SWEEP_INVALID: {
    grpc: 'INVALID_ARGUMENT',
    exit: 2,
    retry: 'never',
    when: 'a sweep file does not validate',
    fix: 'each problem is listed with its line, its path in the file and what is allowed',
  },
  FERRY_ERR_SOURCE_WEIGHTS: {
    grpc: 'FAILED_PRECONDITION',
    exit: 2,
    retry: 'again',
    when: "a cell of a later stage (`weights: stage:<name>`) cannot get its source cell's best weights from the coordinator: the source kept none (its upload failed) or the transfer broke off",
    fix: "the message names the source cell; its worker's log says why its best weights were not kept; `ferry sweep retry` once it has them",
  },
  FERRY_ERR_NOT_FOUND: {
    grpc: 'NOT_FOUND',
    exit: 2,
    retry: 'never',
    when: 'a sweep (or its checkpoint) that a request names does not exist on the coordinator',
    fix: '`ferry sweep list` shows the sweeps the coordinator holds',
  },
  FERRY_ERR_UNAVAILABLE: {
    grpc: 'UNAVAILABLE',
    exit: 2,
    retry: 'again',
    when: 'the coordinator cannot be reached (not running, wrong address, TLS flags that do not match) or did not answer in time',
    fix: 'check `--coordinator HOST:PORT` and `ferry health --coordinator HOST:PORT`; off loopback pass `--tls-ca` (and `--tls-server-name`) as the server expects',
  },
  FERRY_ERR_UNAUTHENTICATED: {
    grpc: 'UNAUTHENTICATED',
    exit: 2,
    retry: 'never',
    when: "a call to the coordinator carried no bearer token, or not the coordinator's",
    fix: "pass the coordinator's `--token` (or `FERRY_TOKEN`)",
  },
  FERRY_ERR_CRASH_LOOP: {
    grpc: 'ABORTED',
    exit: 2,
    retry: 'never',
    when: 'a child of `ferry run` kept exiting: the coordinator, or every worker, crashed more often than the restart limit (5 within 2 minutes), so the sweep cannot progress',
    fix: 'the message names the child, its exit and the last lines of its log (under `<out>/logs/`); fix the cause and run the same command again: finished cells are kept',
  },
  FERRY_ERR_SLURM: {
    grpc: 'FAILED_PRECONDITION',
    exit: 2,
    retry: 'never',
    when: "`ferry run --slurm` could not get its workers from Slurm: `sbatch` refused the job (a bad partition, account, QoS or time limit: Slurm's own message is quoted), a Slurm command failed or is not installed, or the worker jobs kept ending and the limit on submissions (`--max-submissions`) is spent with the sweep unfinished",
    fix: "fix what Slurm's message names (`sinfo` lists partitions, `sacctmgr show assoc user=$USER` accounts and QoS) and run the same command again: finished cells are kept; for jobs that keep ending, read their logs (`<out>/logs/slurm-*.log`)",
  },
  FERRY_ERR_INTERNAL: {
    grpc: 'INTERNAL',
    exit: 1,
    retry: 'again',
    when: 'a worker hit an unexpected error while training a cell',
    fix: "a bug: the cell is retried; the error is in `ferry sweep status` and the worker's log",
  },
} as const satisfies Readonly<Record<string, ErrorDefinition>>;

export type ErrorCode = keyof typeof ERRORS;

/** Base class of every error ferry raises on purpose: a stable code from ERRORS, a cause, a message that says what to change. */
export class FerryError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export function isFerryError(e: unknown): e is FerryError {
  return e instanceof FerryError;
}

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERRORS, code);
}

/** The gRPC status a client sees for an error of this code. */
export function grpcStatusOf(code: ErrorCode): number {
  return GRPC_STATUS[ERRORS[code].grpc];
}

/** The CLI's exit status for an error of this code. */
export function retryOf(code: ErrorCode): ErrorDefinition['retry'] {
  return ERRORS[code].retry;
}

export function exitCodeOf(code: ErrorCode): number {
  return ERRORS[code].exit;
}
