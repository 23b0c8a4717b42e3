import {
  BACKEND_NAMES,
  FerryError,
  HYPER_PARAMETERS,
  LIMITS,
  TRAINING_DEFAULTS,
  TRAINING_HYPER_PARAMETER_NAMES,
  hyperParameterProblem,
  hyperParameterRange,
  type HyperParameterDefinition,
  type HyperParameterName,
  type TrainingHyperParameters,
} from '@ferry/common';
import { Option, type Command } from 'commander';
import type { CliIo } from './io.js';

/**
 * What every command definition (commands/*.ts) uses: value parsers that raise ferry's usage error,
 * the help text shared by all commands, and the connection flags. Light on purpose: the top level
 * loads every definition, so nothing here may load gRPC, SQLite, TensorFlow.js or fastify.
 */

/** A usage or input error: exit 2, FERRY_ERR_INVALID_ARGUMENT and its fix. */
export function usageError(message: string): FerryError {
  return new FerryError('FERRY_ERR_INVALID_ARGUMENT', message);
}

/** An integer option's parser: `--name must be an integer >= min`. */
export function int(name: string, min = 0): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min)
      throw usageError(`--${name} must be an integer >= ${min} (got "${value}")`);
    return n;
  };
}

/** A number option's parser. */
export function num(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw usageError(`--${name} must be a number (got "${value}")`);
    return n;
  };
}

/**
 * The training hyper-parameters as `ferry train`'s flags gave them (each declared by hyperOption),
 * by the table's names: commander's value for each one's flag, the table's default where it has
 * none, each checked against the table's range.
 */
export function trainingFromFlags(cmd: Command): TrainingHyperParameters {
  const out: Record<string, number | boolean> = {};
  for (const name of TRAINING_HYPER_PARAMETER_NAMES) {
    const flag = HYPER_PARAMETERS[name].flag;
    const value: unknown = flag ? cmd.getOptionValue(new Option(flag).attributeName()) : TRAINING_DEFAULTS[name];
    const problem = hyperParameterProblem(name, value);
    if (problem) throw usageError(`${flag ?? name} ${problem}; allowed: ${hyperParameterRange(name)}`);
    out[name] = value as number | boolean;
  }
  return out as TrainingHyperParameters;
}

/**
 * A hyper-parameter's option from the cell specification's table (@ferry/common): its flag,
 * description, default and range are the sweep's, written once. `short` adds a one-letter flag,
 * `note` a word for the study script's spelling.
 */
export function hyperOption(cmd: Command, name: HyperParameterName, short?: string, note = ''): Command {
  const d: HyperParameterDefinition = HYPER_PARAMETERS[name];
  if (!d.flag) throw new Error(`${name} has no flag in HYPER_PARAMETERS`);
  if (d.kind === 'boolean') return cmd.option(d.flag, `${d.flagWhat ?? d.what}${note}`);
  const flag = `${short ? `${short}, ` : ''}${d.flag} <${d.kind === 'integer' ? 'n' : 'x'}>`;
  const parse = (value: string): number => {
    const n = Number(value);
    const problem = value.trim() === '' ? `must be a number (got "${value}")` : hyperParameterProblem(name, n);
    if (problem) throw usageError(`${d.flag} ${problem}; allowed: ${hyperParameterRange(name)}`);
    return n;
  };
  return cmd.option(flag, `${d.what}${note}; ${hyperParameterRange(name)}`, parse, d.default);
}

/** `--alpha`: the significance level a verdict needs (p < alpha). */
export function alpha(value: string): number {
  const a = num('alpha')(value);
  if (!(a > 0 && a < 1)) throw usageError(`--alpha must be between 0 and 1 (got ${a})`);
  return a;
}

/** True when the user gave the option (not its default): environment variables then come second. */
export function given(cmd: Command, key: string): boolean {
  const source = cmd.getOptionValueSource(key);
  return source !== undefined && source !== 'default';
}

/** The examples below a command's options in its help. */
export function examples(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText('after', `\nexample${lines.length > 1 ? 's' : ''}:\n${lines.map((l) => `  ${l}`).join('\n')}`);
}

export const LIMITS_HELP = `input limits (any command, before or after its name; or the environment variable):
${Object.values(LIMITS)
  .map((l) => `  ${`${l.flag} N`.padEnd(29)}${l.what} (${l.env}, default ${l.default})`)
  .join('\n')}`;

/** The flags that reach a coordinator (and FERRY_COORDINATOR / FERRY_TOKEN from the environment). */
export function connectionFlags(cmd: Command): Command {
  return cmd
    .option('--coordinator <host:port>', 'the coordinator (FERRY_COORDINATOR when not given)', '127.0.0.1:7070')
    .option('--token <token>', "the coordinator's token (default: FERRY_TOKEN)")
    .option('--token-file <file>', 'read the token from this file, readable only by you (not shown by ps)')
    .option('--tls-ca <file>', "the coordinator's CA certificate (TLS)")
    .option('--tls-cert <file>', 'client certificate (mutual TLS)')
    .option('--tls-key <file>', "the client certificate's key")
    .option('--tls-server-name <name>', "the name in the coordinator's certificate, when not its address")
    .option('--insecure-token', 'send the token to a non-loopback coordinator without TLS', false);
}

/** The connection flags as parsed (see connectionFlags). */
export interface ConnectionFlags {
  readonly coordinator: string;
  readonly coordinatorGiven: boolean;
  readonly token?: string;
  readonly tokenFile?: string;
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tlsServerName?: string;
  readonly insecureToken: boolean;
}

/** A command's options, with whether --coordinator was given (FERRY_COORDINATOR applies otherwise). */
export function withConnection<T extends object>(cmd: Command): T & ConnectionFlags {
  return { ...cmd.opts<T & ConnectionFlags>(), coordinatorGiven: given(cmd, 'coordinator') };
}

/** What a command's action reads (the streams and environment) and sets (the exit code). */
export interface CommandContext {
  readonly io: CliIo;
  /** The arguments as parsed (after the input-limit flags were taken out). */
  readonly argv: readonly string[];
  code: number;
}

/** The backends `--backend` takes (auto: the best that works here). */
export const BACKEND_CHOICES = ['auto', ...BACKEND_NAMES].join(', ');
