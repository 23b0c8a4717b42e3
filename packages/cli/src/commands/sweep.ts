import { Option, type Command } from 'commander';
import type * as SweepModule from '../actions/sweep.js';
import type { ArtifactsFlags, ResultsFlags, SubmitFlags } from '../actions/sweep.js';
import type { ConnectionFlags } from '../kit.js';
import { DEFAULT_ALPHA, HYPER_PARAMETER_NAMES } from '@ferry/common';
import { alpha, connectionFlags, examples, int, usageError, withConnection, type CommandContext } from '../kit.js';

type SweepActions = typeof SweepModule;

/** A subcommand of `ferry sweep` with the connection flags, whose action gets its argument and options. */
function sub<T extends object>(
  sweep: Command,
  ctx: CommandContext,
  name: string,
  run: (a: SweepActions, arg: string, o: T & ConnectionFlags) => Promise<number>,
): Command {
  const cmd: Command = connectionFlags(sweep.command(name)).action(async () => {
    ctx.code = await run(await import('../actions/sweep.js'), cmd.args[0] ?? '', withConnection<T>(cmd));
  });
  return cmd;
}

/** `--by lr,batchSize`: settings of the cell specification (CellSpec's names). */
function settingList(value: string): string[] {
  const names = value.split(',').map((x) => x.trim());
  const known = ['seed', 'weights', ...HYPER_PARAMETER_NAMES] as string[];
  for (const n of names)
    if (!known.includes(n)) throw usageError(`--by: ${JSON.stringify(n)} is not a setting; use ${known.join(', ')}`);
  return names;
}

/** `ferry sweep submit|status|results|artifacts|retry|cancel|list`, against a coordinator. */
export function sweepDefinition(program: Command, ctx: CommandContext): void {
  const io = ctx.io;
  const sweep = program
    .command('sweep')
    .description('submit | status | results | artifacts | retry | cancel | list, against a coordinator');
  examples(sweep, 'ferry sweep submit examples/demo.yaml --coordinator 127.0.0.1:7070', 'ferry sweep list');
  const submit = sub<SubmitFlags>(sweep, ctx, 'submit', (a, file, o) => a.submit(file, o, io))
    .description('submit a sweep file (cells already done are kept)')
    .argument('<FILE>', 'the sweep YAML')
    .option('--data-root <dir>', 'fingerprint the datasets under this folder (workers then check theirs)')
    .option('--max-attempts <n>', "attempts per cell (0: the coordinator's default)", int('max-attempts', 0), 0);
  examples(submit, 'ferry sweep submit examples/demo.yaml --data-root data');
  const status = sub(sweep, ctx, 'status', (a, id, o) => a.status(id, o, io))
    .description("a sweep's cells: state, epoch, attempts, worker, best val accuracy, error")
    .argument('<SWEEP>', 'the sweep id');
  examples(status, 'ferry sweep status 3f2a9c');
  const results = sub<ResultsFlags>(sweep, ctx, 'results', (a, id, o) => a.results(id, o, io))
    .description('the comparison table of the done cells (verdicts with intervals and p-values)')
    .argument('<SWEEP>', 'the sweep id')
    .addOption(
      new Option('--format <md|csv|json|html>', 'the output').choices(['md', 'csv', 'json', 'html']).default('md'),
    )
    .option('--alpha <p>', 'the significance level of a verdict', alpha, DEFAULT_ALPHA)
    .option(
      '--by <settings>',
      'split rows by these settings of the cells, comma-separated (lr, batchSize, seed...); a setting that varies within a column always splits',
      settingList,
      [],
    );
  examples(
    results,
    'ferry sweep results 3f2a9c --format html > results.html',
    'ferry sweep results 3f2a9c --by lr,batchSize',
  );
  const artifacts = sub<ArtifactsFlags>(sweep, ctx, 'artifacts', (a, id, o) => a.artifacts(id, o, io))
    .description(
      "each done cell's best-val weights (safetensors, torchvision names) and what they need (classes, transform, accuracy)",
    )
    .argument('<SWEEP>', 'the sweep id')
    .requiredOption(
      '--out <dir>',
      'where the files go (<dataset>-<color>-<strategy>-<model>-s<seed>.safetensors and .json)',
    );
  examples(artifacts, 'ferry sweep artifacts 3f2a9c --out weights/');
  for (const [name, what] of [
    ['retry', 'requeue the failed cells'],
    ['cancel', 'cancel the cells not done'],
  ] as const) {
    const c = sub(sweep, ctx, name, (a, id, o) => a.retryOrCancel(name, id, o, io))
      .description(`${what} of a sweep`)
      .argument('<SWEEP>', 'the sweep id');
    examples(c, `ferry sweep ${name} 3f2a9c`);
  }
  const list = sub(sweep, ctx, 'list', (a, _id, o) => a.list(o, io)).description('the sweeps with their counts');
  examples(list, 'ferry sweep list --coordinator 127.0.0.1:7070');
}
