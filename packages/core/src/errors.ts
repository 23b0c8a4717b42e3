/**
 * Typed errors with stable codes. Every code has a line in docs/errors.md; adapters map
 * each code to exactly one gRPC status (see `grpcStatusFor`).
 */
export const ERROR_CODES = {
  FERRY_ERR_INVALID_ARGUMENT: 'a caller passed a value ferry cannot use',
  FERRY_ERR_UNKNOWN_MODEL: 'the model name is not in the zoo',
  FERRY_ERR_BACKEND_UNAVAILABLE: 'the requested TensorFlow.js backend cannot start here',
  FERRY_ERR_WEIGHTS_CORRUPT: 'a weights or checkpoint file is truncated or malformed',
  FERRY_ERR_WEIGHTS_MISMATCH: 'a weights file does not fit the model (missing, unexpected or mis-shaped tensor)',
  FERRY_ERR_UNSUPPORTED_FORMAT: 'a file uses a format or feature ferry does not read',
  FERRY_ERR_DOWNLOAD: 'a download failed or its checksum did not match',
  FERRY_ERR_NON_FINITE_LOSS: 'training produced a NaN or infinite loss',
  FERRY_ERR_CHECKPOINT: 'a checkpoint cannot be used to resume this run',
  FERRY_ERR_IMAGE_UNREADABLE: 'an image file cannot be decoded',
  FERRY_ERR_DATASET: 'a dataset folder cannot be trained on as it is (layout, classes, no images)',
  FERRY_ERR_DEVICE: 'the GPU device reported an error (invalid program, out of memory, device lost)',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Base class of every error ferry raises on purpose. */
export class FerryError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export class InvalidArgumentError extends FerryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_INVALID_ARGUMENT', message, options);
  }
}

export class UnknownModelError extends FerryError {
  constructor(readonly model: string, known: readonly string[]) {
    super('FERRY_ERR_UNKNOWN_MODEL', `unknown model "${model}"; known models: ${known.join(', ')} (see \`ferry models\`)`);
  }
}

export class BackendUnavailableError extends FerryError {
  constructor(readonly backend: string, reason: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_BACKEND_UNAVAILABLE', `backend "${backend}" is unavailable: ${reason}`, options);
  }
}

export class WeightsCorruptError extends FerryError {
  constructor(readonly file: string, reason: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_WEIGHTS_CORRUPT', `${file}: ${reason}`, options);
  }
}

export class WeightsMismatchError extends FerryError {
  constructor(
    readonly problems: readonly string[],
    context: string,
  ) {
    const shown = problems.slice(0, 8).join('; ');
    const more = problems.length > 8 ? ` (and ${problems.length - 8} more)` : '';
    super('FERRY_ERR_WEIGHTS_MISMATCH', `${context}: ${shown}${more}`);
  }
}

export class UnsupportedFormatError extends FerryError {
  constructor(message: string) {
    super('FERRY_ERR_UNSUPPORTED_FORMAT', message);
  }
}

export class DownloadError extends FerryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_DOWNLOAD', message, options);
  }
}

export class NonFiniteLossError extends FerryError {
  constructor(
    readonly epoch: number,
    readonly step: number,
    readonly loss: number,
  ) {
    super(
      'FERRY_ERR_NON_FINITE_LOSS',
      `loss became ${loss} at epoch ${epoch}, step ${step}; lower the learning rate or check the input data`,
    );
  }
}

export class CheckpointError extends FerryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_CHECKPOINT', message, options);
  }
}

export class ImageUnreadableError extends FerryError {
  constructor(readonly file: string, reason: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_IMAGE_UNREADABLE', `${file}: cannot decode image: ${reason}`, options);
  }
}

export class DatasetError extends FerryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_DATASET', message, options);
  }
}

export class DeviceError extends FerryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_DEVICE', message, options);
  }
}

export function isFerryError(e: unknown): e is FerryError {
  return e instanceof FerryError;
}
