import * as grpc from '@grpc/grpc-js';

/** Exponential backoff bounds: the first wait, doubled after each failure up to the last. */
export interface BackoffPolicy {
  readonly minMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { minMs: 250, maxMs: 10_000 };

/** A call that never reached the coordinator or got no answer in time: it may be restarting. */
export function isUnavailable(e: unknown): boolean {
  const code = (e as Partial<grpc.ServiceError>).code;
  return code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED;
}

/**
 * Calls `fn` until it succeeds, waiting minMs, 2 minMs, ... (at most maxMs) between tries, while
 * `retry(error)` says another try may help; otherwise the error is thrown. The one retry loop of
 * every coordinator client (registration, results, failures).
 */
export async function withBackoff<T>(
  fn: () => Promise<T>,
  opts: {
    readonly policy?: BackoffPolicy;
    readonly retry: (e: unknown) => boolean;
    readonly onRetry?: (e: unknown, delayMs: number) => void;
  },
): Promise<T> {
  const policy = opts.policy ?? DEFAULT_BACKOFF;
  let delay = policy.minMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (!opts.retry(e)) throw e;
      opts.onRetry?.(e, delay);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, policy.maxMs);
    }
  }
}
