/**
 * The engine's typed errors. The base class and the one registry of codes (gRPC status, exit code,
 * the fix) live in @ferry/common; these subclasses only fix the code and shape the message.
 */
import { FerryError } from '@ferry/common';

export { FerryError, isFerryError, type ErrorCode } from '@ferry/common';

export class InvalidArgumentError extends FerryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FERRY_ERR_INVALID_ARGUMENT', message, options);
  }
}

export class UnknownModelError extends FerryError {
  constructor(
    readonly model: string,
    known: readonly string[],
  ) {
    super(
      'FERRY_ERR_UNKNOWN_MODEL',
      `unknown model "${model}"; known models: ${known.join(', ')} (see \`ferry models\`)`,
    );
  }
}

export class BackendUnavailableError extends FerryError {
  constructor(
    readonly backend: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super('FERRY_ERR_BACKEND_UNAVAILABLE', `backend "${backend}" is unavailable: ${reason}`, options);
  }
}

export class WeightsCorruptError extends FerryError {
  constructor(
    readonly file: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
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
  constructor(
    readonly file: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
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
