import { Coordinator, type CoordinatorOptions } from '@ferry/coordinator';
import { InvalidArgumentError } from '@ferry/core';
import { err, out, type CliIo } from '../io.js';
import { readTokenFile } from '../token-file.js';

export interface CoordinatorFlags {
  readonly listen: string;
  readonly state: string;
  readonly token?: string;
  readonly tokenFile?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tlsCa?: string;
  readonly insecure: boolean;
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly maxAttempts: number;
  readonly maxCheckpointMb: number;
  readonly checkpointIdleMs: number;
  readonly recoveryGraceMs: number;
  readonly nats?: string;
}

function coordinatorOptions(o: CoordinatorFlags, io: CliIo): CoordinatorOptions {
  const nats = o.nats ?? io.env['FERRY_NATS'];
  const { tlsCert: cert, tlsKey: key, tlsCa: ca } = o;
  if ((cert === undefined) !== (key === undefined))
    throw new InvalidArgumentError('--tls-cert and --tls-key go together');
  if (o.token !== undefined && o.tokenFile !== undefined)
    throw new InvalidArgumentError('--token and --token-file: give one');
  const token = o.tokenFile !== undefined ? readTokenFile(o.tokenFile) : (o.token ?? io.env['FERRY_TOKEN']);
  return {
    listen: o.listen,
    stateDir: o.state,
    ...(token ? { token } : {}),
    ...(cert && key ? { tls: { cert, key, ...(ca ? { ca } : {}) } } : {}),
    insecure: o.insecure,
    leaseMs: o.leaseMs,
    heartbeatIntervalMs: o.heartbeatMs,
    maxAttempts: o.maxAttempts,
    maxCheckpointBytes: o.maxCheckpointMb * 2 ** 20,
    checkpointIdleMs: o.checkpointIdleMs,
    recoveryGraceMs: o.recoveryGraceMs,
    ...(nats ? { nats: { url: nats } } : {}),
  };
}

/** `ferry coordinator`: runs until SIGINT/SIGTERM; prints `listening on HOST:PORT` once bound. */
export async function coordinatorCommand(o: CoordinatorFlags, io: CliIo): Promise<number> {
  const opts = coordinatorOptions(o, io);
  let coordinator: Coordinator;
  try {
    coordinator = await Coordinator.create(opts);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
  const address = await coordinator.run();
  out(io, `listening on ${address}`);
  err(
    io,
    `ferry coordinator: state in ${opts.stateDir}${opts.token ? ', token required' : ''}${opts.tls ? ', TLS' : ''}`,
  );
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await coordinator.shutdown();
  return 0;
}
