import type { Command } from 'commander';
import type * as DataModule from '../actions/data.js';
import type { DemoFlags, PullFlags, SplitFlags } from '../actions/data.js';
import { examples, int, num, type CommandContext } from '../kit.js';

type DataActions = typeof DataModule;

/** Runs one of actions/data.ts's functions (loaded then: it brings TensorFlow.js's image code). */
function act(ctx: CommandContext, run: (a: DataActions) => Promise<number>): () => Promise<void> {
  return async () => {
    ctx.code = await run(await import('../actions/data.js'));
  };
}

/** `ferry data split|stats|import|pull|gray|demo`. */
export function dataDefinition(program: Command, ctx: CommandContext): void {
  const data = program.command('data').description('dataset tools: split, stats, import, pull, gray, demo');
  examples(data, 'ferry data demo data/demo', 'ferry data stats data/demo');
  const io = ctx.io;
  const split = data
    .command('split')
    .description('class folders -> train/ and val/ (stratified, deterministic)')
    .argument('<SRC>', 'a folder of class folders')
    .argument('<DEST>', 'the new dataset folder')
    .option('--val <f>', 'the share of each class for val', num('val'), 0.2)
    .option('--seed <n>', 'the shuffle seed', int('seed', 0), 0)
    .action(act(ctx, (a) => a.split(split.args[0]!, split.args[1]!, split.opts<SplitFlags>(), io)));
  examples(split, 'ferry data split photos/ data/photos --val 0.25');
  const stats = data
    .command('stats')
    .description('classes, per-split counts, image sizes, unreadable files')
    .argument('<DIR>', 'a dataset folder')
    .option('--json', 'JSON output', false)
    .action(act(ctx, (a) => a.stats(stats.args[0]!, stats.opts<{ json: boolean }>().json, io)));
  examples(stats, 'ferry data stats data/demo --json');
  const imp = data
    .command('import')
    .description('a raw layout (a download as it comes) -> train/ and val/')
    .argument('<KIND>', 'the layout of SRC: hymenoptera, dogs-vs-cats, simpsons or caltech256')
    .argument('<SRC>', 'the raw dataset')
    .argument('<DEST>', 'the new dataset folder')
    .option('--val <f>', 'the share of each class for val', num('val'), 0.2)
    .option('--seed <n>', 'the shuffle seed', int('seed', 0), 0)
    .action(act(ctx, (a) => a.importKind(imp.args as [string, string, string], imp.opts<SplitFlags>(), io)));
  examples(imp, 'ferry data import imagefolder raw/ data/mine');
  pullDefinition(data, ctx);
  const gray = data
    .command('gray')
    .description('a materialised grayscale (PIL "L") copy')
    .argument('<SRC>', 'a dataset folder')
    .argument('<DEST>', 'the grayscale copy')
    .action(act(ctx, (a) => a.gray(gray.args[0]!, gray.args[1]!, io)));
  examples(gray, 'ferry data gray data/demo data/demo-gray');
  demoDefinition(data, ctx);
}

function pullDefinition(data: Command, ctx: CommandContext): void {
  const pull = data
    .command('pull')
    .description('download a known dataset (SHA-256, cache, resumable) and import it')
    .argument('<NAME>', 'the dataset (hymenoptera)')
    .argument('[DEST]', 'where it goes (default: data/NAME)')
    .option('--url <url>', 'download from here instead')
    .option('--sha256 <hex>', "the archive's SHA-256 (default: the pinned one, or the first download's)")
    .option('--cache <dir>', 'the cache folder (default: FERRY_CACHE, else ~/.cache/ferry)')
    .action(act(ctx, (a) => a.pull(pull.args[0]!, pull.args[1], pull.opts<PullFlags>(), ctx.io)));
  examples(pull, 'ferry data pull hymenoptera', 'ferry data pull hymenoptera data/bees --cache /tmp/cache');
}

function demoDefinition(data: Command, ctx: CommandContext): void {
  const demo = data
    .command('demo')
    .description('the offline demo dataset (and its 8-class source domain, for pretraining)')
    .argument('<DEST>', 'the dataset folder')
    .option('--source <dir>', 'also write the source domain here')
    .option('--train-per-class <n>', 'train images per class', int('train-per-class', 1), 100)
    .option('--val-per-class <n>', 'val images per class', int('val-per-class', 1), 25)
    .option('--size <px>', 'image size', int('size', 16), 64)
    .option('--seed <n>', 'the seed', int('seed', 0), 0)
    .action(act(ctx, (a) => a.demo(demo.args[0]!, demo.opts<DemoFlags>(), ctx.io)));
  examples(demo, 'ferry data demo data/demo --source data/demo-source');
}
