import { exitCodeOf, isFerryError } from '@ferry/common';
import { coordinatorCommand, healthCommand, sweepCommand, workerCommand } from './commands/cluster.js';
import { dashboardCommand } from './commands/dashboard.js';
import { dataCommand } from './commands/data.js';
import { infoCommand } from './commands/info.js';
import { modelsCommand } from './commands/models.js';
import { predictCommand } from './commands/predict.js';
import { runCommand } from './commands/run.js';
import { trainCommand } from './commands/train.js';
import { weightsCommand } from './commands/weights.js';
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

Run "ferry <command> --help" for a command's options. Docs: docs/ in the repository.`;

type Command = (argv: readonly string[], io: CliIo) => number | Promise<number>;

const COMMANDS: Readonly<Record<string, Command>> = {
  info: infoCommand,
  models: modelsCommand,
  weights: weightsCommand,
  predict: predictCommand,
  train: trainCommand,
  run: runCommand,
  coordinator: coordinatorCommand,
  worker: workerCommand,
  sweep: sweepCommand,
  dashboard: dashboardCommand,
  health: healthCommand,
  data: dataCommand,
};

/** The `ferry` entry point; returns the process exit code (2 for a usage or input error). */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(io, HELP);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    out(io, FERRY_VERSION);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    err(io, `ferry: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    out(io, HELP);
    return 0;
  }
  try {
    return await command(rest, io);
  } catch (e) {
    if (isFerryError(e)) {
      err(io, `ferry ${name}: ${e.message} [${e.code}]`);
      return exitCodeOf(e.code);
    }
    err(io, `ferry ${name}: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}
