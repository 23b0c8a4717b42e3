import { grpcStatusOf, isFerryError, sameSecret } from '@ferry/common';
import * as grpc from '@grpc/grpc-js';

/** A gRPC status with details, as a handler answers it. */
export function status(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/**
 * An error thrown by a handler as the status a client sees: the registry's status for ferry's own
 * errors, with the code in the details (`[FERRY_ERR_...]`, read back by @ferry/client); anything
 * else is a bug (INTERNAL).
 */
export function errorStatus(e: unknown): grpc.ServiceError {
  return isFerryError(e)
    ? status(grpcStatusOf(e.code), `${e.message} [${e.code}]`)
    : status(grpc.status.INTERNAL, e instanceof Error ? e.message : String(e));
}

/**
 * Every call must carry `authorization: Bearer <token>` (compared in constant time), checked in
 * grpc-js's server interceptor chain before any handler sees the call.
 */
export function bearerTokenInterceptor(token: string): grpc.ServerInterceptor {
  const want = `Bearer ${token}`;
  return (_method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            if (sameSecret(String(metadata.get('authorization')[0] ?? ''), want)) pass(metadata);
            else
              call.sendStatus({
                code: grpcStatusOf('FERRY_ERR_UNAUTHENTICATED'),
                details: 'missing or wrong bearer token [FERRY_ERR_UNAUTHENTICATED]',
              });
          },
        }),
    });
}

type AnyHandler = (call: { emit(event: 'error', e: Error): boolean }, cb?: (e: grpc.ServiceError) => void) => void;

/**
 * A service's handlers with what they throw answered as statuses (errorStatus). A server stream
 * (no callback) ends with its status through emit('error'): destroy() would drop the call without
 * one and leave the client waiting for its deadline.
 */
export function guarded<T extends grpc.UntypedServiceImplementation>(handlers: T): T {
  const out: Record<string, AnyHandler> = {};
  for (const [name, h] of Object.entries(handlers) as [string, AnyHandler][]) {
    out[name] = (call, cb) => {
      try {
        h(call, cb);
      } catch (e) {
        if (cb) cb(errorStatus(e));
        else call.emit('error', errorStatus(e));
      }
    };
  }
  return out as unknown as T;
}
