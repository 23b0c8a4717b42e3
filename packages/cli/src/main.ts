import { ERRORS, LIMITS, exitCodeOf, extractLimitFlags, isFerryError, limits, type FerryError } from '@ferry/common';
import { err, out, type CliIo } from './io.js';
import { FERRY_VERSION } from './version.js';

type Command = (argv: readonly string[], io: CliIo) => number | Promise<number>;

interface CommandEntry {
  /** As the top-level help lists it. */
  readonly synopsis: string;
  readonly summary: string;
  /** The command's module, loaded when it runs: `ferry --version` loads no gRPC, SQLite, TensorFlow.js or dashboard. */
  readonly load: () => Promise<{ readonly run: Command; readonly usage: string }>;
}

const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  info: {
    synopsis: 'info',
    summary: 'backend chosen, the others and why they are unavailable, GPUs, versions',
    load: async () => {
      const m = await import('./commands/info.js');
      return { run: m.infoCommand, usage: m.USAGE };
    },
  },
  models: {
    synopsis: 'models',
    summary: 'the model zoo: parameter counts, stages, default weights',
    load: async () => {
      const m = await import('./commands/models.js');
      return { run: m.modelsCommand, usage: m.USAGE };
    },
  },
  weights: {
    synopsis: 'weights pull MODEL',
    summary: 'download official torchvision weights (SHA-256 checked, resumable)',
    load: async () => {
      const m = await import('./commands/weights.js');
      return { run: m.weightsCommand, usage: m.USAGE };
    },
  },
  predict: {
    synopsis: 'predict',
    summary: 'logits of an NCHW .npy (--input) or top-k classes of an image (--image)',
    load: async () => {
      const m = await import('./commands/predict.js');
      return { run: m.predictCommand, usage: m.USAGE };
    },
  },
  run: {
    synopsis: 'run SWEEP.yaml',
    summary: 'the embedded default: coordinator + N local workers, supervised; the sweep, the results table and report',
    load: async () => {
      const m = await import('./commands/run.js');
      return { run: m.runCommand, usage: m.USAGE };
    },
  },
  coordinator: {
    synopsis: 'coordinator',
    summary: "the cluster's coordinator (gRPC, SQLite state)",
    load: async () => {
      const m = await import('./commands/cluster.js');
      return { run: m.coordinatorCommand, usage: m.COORD_USAGE };
    },
  },
  worker: {
    synopsis: 'worker',
    summary: 'a worker (one per GPU; --gpus all starts one per GPU)',
    load: async () => {
      const m = await import('./commands/cluster.js');
      return { run: m.workerCommand, usage: m.WORKER_USAGE };
    },
  },
  sweep: {
    synopsis: 'sweep',
    summary: 'submit | status | results | retry | cancel | list, against a coordinator',
    load: async () => {
      const m = await import('./commands/cluster.js');
      return { run: m.sweepCommand, usage: m.SWEEP_USAGE };
    },
  },
  dashboard: {
    synopsis: 'dashboard',
    summary: 'live progress, curves and the comparison table in a browser (NATS, a coordinator, or a run folder)',
    load: async () => {
      const m = await import('./commands/dashboard.js');
      return { run: m.dashboardCommand, usage: m.USAGE };
    },
  },
  health: {
    synopsis: 'health',
    summary: 'exit 0 when a coordinator, dashboard or worker is healthy (probes)',
    load: async () => {
      const m = await import('./commands/cluster.js');
      return { run: m.healthCommand, usage: m.HEALTH_USAGE };
    },
  },
  train: {
    synopsis: 'train',
    summary: "one training run (the study script's flags): -d DATASET -m MODEL -f 1|0 ...",
    load: async () => {
      const m = await import('./commands/train.js');
      return { run: m.trainCommand, usage: m.USAGE };
    },
  },
  data: {
    synopsis: 'data',
    summary: 'dataset tools: split, stats, import, pull, gray, demo',
    load: async () => {
      const m = await import('./commands/data.js');
      return { run: m.dataCommand, usage: m.USAGE };
    },
  },
};

const LIMITS_HELP = `input limits (any command, before or after its name; or the environment variable):
${Object.values(LIMITS)
  .map((l) => `  ${`${l.flag} N`.padEnd(29)}${l.what} (${l.env}, default ${l.default})`)
  .join('\n')}`;

const HELP = `ferry ${FERRY_VERSION}: transfer-learning studies (finetune vs freeze) across GPUs

usage: ferry <command> [options]

commands:
${Object.values(COMMANDS)
  .map((c) => `  ${c.synopsis.padEnd(21)}${c.summary}`)
  .join('\n')}

${LIMITS_HELP}

Run "ferry <command> --help" for a command's options. Docs: docs/ in the repository.`;

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
  const entry = COMMANDS[name];
  if (!entry) {
    err(io, `ferry: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    // This command's own usage, not the list of commands.
    const { usage } = await entry.load();
    out(
      io,
      `ferry ${name}: ${entry.summary}\n\nusage: ${usage}\n\n${LIMITS_HELP}\n\nDocs: README.md and docs/ in the repository (errors: docs/errors.md).`,
    );
    return 0;
  }
  try {
    const { run } = await entry.load();
    return await run(rest, io);
  } catch (e) {
    if (isFerryError(e)) {
      report(io, `ferry ${name}`, e);
      return exitCodeOf(e.code);
    }
    err(io, `ferry ${name}: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}
