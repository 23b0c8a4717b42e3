import { FerryError } from '@ferry/common';

/** A kernel that failed inside libtorch (or one the torch backend lacks), with libtorch's reason. */
export class NativeKernelError extends FerryError {
  constructor(
    readonly kernel: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super('FERRY_ERR_NATIVE_KERNEL', `torch backend, kernel ${kernel}: ${reason}`, options);
  }
}

/** A failure inside the addon as ferry's coded error (a FerryError passes through). */
export function nativeError(kernel: string, e: unknown): Error {
  if (e instanceof FerryError) return e;
  const reason = (e instanceof Error ? e.message : String(e)).replace(/^libtorch: /, '');
  return new NativeKernelError(kernel, reason.split('\n')[0] ?? reason, { cause: e });
}
