import { Command, CommanderError, type Help } from 'commander';
import { adviseDefinition } from './commands/advise.js';
import { coordinatorDefinition } from './commands/coordinator.js';
import { dashboardDefinition } from './commands/dashboard.js';
import { dataDefinition } from './commands/data.js';
import { healthDefinition } from './commands/health.js';
import { infoDefinition } from './commands/info.js';
import { modelsDefinition } from './commands/models.js';
import { predictDefinition } from './commands/predict.js';
import { runDefinition } from './commands/run.js';
import { sweepDefinition } from './commands/sweep.js';
import { studyFlags, trainDefinition } from './commands/train.js';
import { weightsDefinition } from './commands/weights.js';
import { workerDefinition } from './commands/worker.js';
import { LIMITS_HELP, usageError, type CommandContext } from './kit.js';
import { FERRY_VERSION } from './version.js';

/**
 * The `ferry` command line as one commander program: each command's file (commands/*.ts) declares its
 * options, arguments and subcommands, and both the parser and the help are made from that. Loading
 * the program loads no command's implementation: each action imports its own (actions/*.ts) when it runs.
 */
const DEFINITIONS: readonly ((program: Command, ctx: CommandContext) => void)[] = [
  infoDefinition,
  modelsDefinition,
  weightsDefinition,
  predictDefinition,
  runDefinition,
  coordinatorDefinition,
  workerDefinition,
  sweepDefinition,
  dashboardDefinition,
  healthDefinition,
  trainDefinition,
  adviseDefinition,
  dataDefinition,
];

/** `ferry sweep results`, as the help and the error messages name a command. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** A command as the list of commands shows it: its name, then its arguments or its subcommands. */
function subcommandTerm(cmd: Command): string {
  const args = cmd.registeredArguments.map((a) => (a.required ? a.name() : `[${a.name()}]`));
  const subs = cmd.commands.map((c) => c.name());
  return [cmd.name(), ...(subs.length ? [subs.join('|')] : args)].join(' ');
}

export function buildProgram(ctx: CommandContext): Command {
  const io = ctx.io;
  const program = new Command('ferry')
    .description('transfer-learning studies (finetune vs freeze) across GPUs')
    .version(FERRY_VERSION, '-v, --version', 'print the version')
    .helpOption('-h, --help', 'print the help (of a command: ferry COMMAND --help)')
    .helpCommand(false)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: () => undefined, // main() says it, with the error code and what to do
    })
    .configureHelp({
      styleTitle: (t) => t.toLowerCase(),
      commandDescription: () => '', // the first line says it (beforeAll below)
      subcommandTerm,
      sortSubcommands: false,
    } satisfies Partial<Help>)
    .addHelpText('beforeAll', ({ command }) =>
      command.parent
        ? `${commandPath(command)}: ${command.description()}\n`
        : `ferry ${FERRY_VERSION}: ${command.description()}\n`,
    )
    .addHelpText(
      'afterAll',
      `\n${LIMITS_HELP}\n\nDocs: README.md and docs/ in the repository (errors: docs/errors.md).`,
    );
  for (const define of DEFINITIONS) define(program, ctx);
  program.helpCommand('help [command...]', "a command's help: ferry help sweep results = ferry sweep results --help");
  return program;
}

/** The command an argument list names (the deepest known one), for its help and its errors. */
export function commandOf(program: Command, argv: readonly string[]): Command {
  let cmd = program;
  for (const a of argv) {
    if (a.startsWith('-')) continue;
    const sub = cmd.commands.find((c) => c.name() === a);
    if (!sub) break;
    cmd = sub;
  }
  return cmd;
}

/** `ferry help CMD [SUB]` is `ferry CMD [SUB] --help`; train's -lr, -lrs, -lre and -mm become long flags. */
export function normalise(argv: readonly string[]): string[] {
  if (argv[0] === 'help') return [...argv.slice(1), '--help'];
  if (argv[0] === 'train') return studyFlags(argv);
  return [...argv];
}

/**
 * Runs the program; returns the exit code. A usage error (an unknown command or option, a missing
 * argument) becomes ferry's FERRY_ERR_INVALID_ARGUMENT with the usage line of the command.
 */
export async function runProgram(argv: readonly string[], ctx: CommandContext, program: Command): Promise<number> {
  if (argv.length === 0) {
    program.outputHelp();
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return ctx.code;
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    if (e.exitCode === 0) return 0; // --help, --version
    if (e.code === 'commander.help') return 2; // a command that needs a subcommand: its help is on stderr
    const cmd = commandOf(program, argv);
    const message = e.message.replace(/^error: /, '').replace(/\n/g, ' ');
    throw usageError(`${message}\nusage: ${cmd.createHelp().commandUsage(cmd)} (--help for more)`);
  }
}
