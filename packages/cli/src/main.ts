import { ERRORS, LIMITS, exitCodeOf, extractLimitFlags, isFerryError, limits, type FerryError } from '@ferry/common';
import { err, out, type CliIo } from './io.js';
import { FERRY_VERSION } from './version.js';

const HELP = `ferry ${FERRY_VERSION}: transfer-learning studies (finetune vs freeze) across GPUs

usage: ferry <command> [options]

commands:
  info                 backend chosen, the others and why they are unavailable, GPUs, versions
  models               the model zoo: parameter counts, stages, default weights
  weights pull MODEL   download official torchvision weights (SHA-256 checked, resumable)
  predict              logits of an NCHW .npy (--input) or top-k classes of an image (--image)
  run SWEEP.yaml       the embedded default: coordinator + N local workers, the sweep, the results table
  coordinator          the cluster's coordinator (gRPC, SQLite state)
  worker               a worker (one per GPU; --gpus all starts one per GPU)
  sweep                submit | status | results | retry | cancel | list, against a coordinator
  dashboard            live progress and the comparison table in a browser (from NATS JetStream)
  health               exit 0 when a coordinator, dashboard or worker is healthy (probes)
  train                one training run (the study script's flags): -d DATASET -m MODEL -f 1|0 ...
  data                 dataset tools: split, stats, import, pull, gray, demo

input limits (any command, before or after its name; or the environment variable):
${Object.values(LIMITS)
  .map((l) => `  ${`${l.flag} N`.padEnd(29)}${l.what} (${l.env}, default ${l.default})`)
  .join('\n')}

Run "ferry <command> --help" for a command's options. Docs: docs/ in the repository.`;

type Command = (argv: readonly string[], io: CliIo) => number | Promise<number>;

// Each command's module is loaded when it runs: `ferry --version` or `ferry info` does not load
// gRPC, SQLite, TensorFlow.js and the dashboard.
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  info: async () => (await import('./commands/info.js')).infoCommand,
  models: async () => (await import('./commands/models.js')).modelsCommand,
  weights: async () => (await import('./commands/weights.js')).weightsCommand,
  predict: async () => (await import('./commands/predict.js')).predictCommand,
  train: async () => (await import('./commands/train.js')).trainCommand,
  run: async () => (await import('./commands/run.js')).runCommand,
  coordinator: async () => (await import('./commands/cluster.js')).coordinatorCommand,
  worker: async () => (await import('./commands/cluster.js')).workerCommand,
  sweep: async () => (await import('./commands/cluster.js')).sweepCommand,
  dashboard: async () => (await import('./commands/dashboard.js')).dashboardCommand,
  health: async () => (await import('./commands/cluster.js')).healthCommand,
  data: async () => (await import('./commands/data.js')).dataCommand,
};

/** The `ferry` entry point; returns the process exit code (2 for a usage or input error). */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  let given: ReturnType<typeof extractLimitFlags>;
  let limitEnv: Record<string, string>;
  try {
    given = extractLimitFlags(argv);
    // The limits in force: FERRY_MAX_* of the caller's environment, then the flags.
    limitEnv = { ...limitVariables(io.env), ...given.env };
    limits(limitEnv); // a malformed FERRY_MAX_* is said now, not at the first image
  } catch (e) {
    if (!isFerryError(e)) throw e;
    report(io, 'ferry', e);
    return exitCodeOf(e.code);
  }
  // For the command's duration they are this process's variables too: its worker threads (the
  // decode pool) and child processes (ferry run's coordinator and workers) apply the same values.
  const saved = limitVariables(process.env);
  for (const k of Object.keys(saved)) delete process.env[k];
  Object.assign(process.env, limitEnv);
  try {
    return await dispatch(given.argv, io);
  } finally {
    for (const k of Object.keys(limitVariables(process.env))) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

function limitVariables(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of Object.values(LIMITS)) {
    const v = env[l.env];
    if (v !== undefined) out[l.env] = v;
  }
  return out;
}

/** `ferry <command>: <message> [<CODE>]`, then the registry's fix for the code. */
function report(io: CliIo, who: string, e: FerryError): void {
  err(io, `${who}: ${e.message} [${e.code}]`);
  if (e.code !== 'FERRY_ERR_INTERNAL') err(io, `  what to do: ${ERRORS[e.code].fix.replace(/`/g, '')}`);
}

async function dispatch(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(io, HELP);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    out(io, FERRY_VERSION);
    return 0;
  }
  const load = COMMANDS[name];
  if (!load) {
    err(io, `ferry: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    out(io, HELP);
    return 0;
  }
  try {
    const command = await load();
    return await command(rest, io);
  } catch (e) {
    if (isFerryError(e)) {
      report(io, `ferry ${name}`, e);
      return exitCodeOf(e.code);
    }
    err(io, `ferry ${name}: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}
