import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { STUDY_DEFAULTS, SweepError, cellId, parseSweep, type CellSpec } from '@ferry/coordinator';

const base = `
name: t
datasets:
  - name: ants
    path: hymenoptera
  - name: simpsons
    path: simpsons
    hyper: { epochs: 20 }
colors: [rgb, gray]
strategies: [finetune, freeze]
models: [resnet18]
seeds: [0, 1]
hyper:
  lr: 0.01
overrides:
  - match: { strategy: freeze }
    set: { lr: 0.1 }
`;

function problems(text: string): string[] {
  try {
    parseSweep(text, 'bad.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(SweepError);
    return [...(e as SweepError).problems];
  }
  throw new Error('expected a SweepError');
}

describe('sweep files', () => {
  test('expand datasets x colors x strategies x models x seeds with layered hyper-parameters', () => {
    const s = parseSweep(base);
    expect(s.cells).toHaveLength(2 * 2 * 2 * 1 * 2);
    const find = (d: string, st: string) =>
      s.cells.find(
        (c) => c.spec.dataset === d && c.spec.strategy === st && c.spec.color === 'gray' && c.spec.seed === 1,
      )!.spec;
    expect(find('ants', 'finetune')).toMatchObject({ lr: 0.01, epochs: STUDY_DEFAULTS.epochs, path: 'hymenoptera' });
    expect(find('ants', 'freeze').lr).toBe(0.1);
    expect(find('simpsons', 'freeze')).toMatchObject({ lr: 0.1, epochs: 20 });
  });

  test('a cell id is a hash of its resolved configuration: stable, and different when anything differs', () => {
    const a = parseSweep(base);
    const b = parseSweep(base.replace('name: t', 'name: renamed'));
    expect(b.cells.map((c) => c.id)).toEqual(a.cells.map((c) => c.id));
    expect(new Set(a.cells.map((c) => c.id)).size).toBe(a.cells.length);
    const spec = a.cells[0]!.spec;
    expect(cellId({ ...spec, lr: spec.lr * 2 })).not.toBe(a.cells[0]!.id);
    expect(cellId({ ...spec })).toBe(a.cells[0]!.id);
  });

  test('exclude removes cells and include adds fully named ones', () => {
    const s = parseSweep(`${base}
exclude:
  - { color: gray, strategy: freeze }
include:
  - { dataset: ants, color: gray, strategy: "freezeUntil:layer4", model: resnet18, seed: 0 }
`);
    expect(s.expanded).toBe(16);
    expect(s.cells).toHaveLength(16 - 4 + 1);
    expect(s.cells.some((c) => c.spec.color === 'gray' && c.spec.strategy === 'freeze')).toBe(false);
    expect(s.cells.filter((c) => c.spec.strategy === 'freezeUntil:layer4')).toHaveLength(1);
  });

  test('errors give the line, the path in the file and what is allowed', () => {
    const p = problems(`name: t
datasets:
  - name: ants
    pth: x
colors: [rgb, purple]
strategies: [finetune]
models: [resnet18]
hyper:
  lr: fast
  epocs: 3
`);
    expect(p).toContain('line 4:5 datasets[0].pth: unknown key; allowed: name, path, valFraction, hyper');
    expect(p).toContain("line 3:5 datasets[0].path: required: the folder relative to each worker's --data-root");
    expect(p).toContain('line 5:15 colors[1]: "purple" is not allowed; use rgb, gray');
    expect(p).toContain('line 9:3 hyper.lr: must be a number (got "fast")');
    expect(p.some((x) => x.startsWith('line 10:3 hyper.epocs: unknown setting; allowed: weights, epochs'))).toBe(true);
    expect(
      problems('name: t\ndatasets: [{ name: a, path: a }]\nmodels: [resnet18]\nhyper: { backends: [cuda] }\n')[0],
    ).toContain('hyper.backends: must be a list of tensorflow-gpu, tensorflow, webgpu, torch, wasm, cpu');
  });

  test('model names are checked against the zoo at submit (a worker never spends an attempt on a typo)', () => {
    const p = problems(
      'name: t\ndatasets: [{ name: a, path: a }]\nmodels: [resnet18, resnet19]\ninclude:\n  - { dataset: a, color: rgb, strategy: finetune, model: ../../x, seed: 0 }\n',
    );
    expect(p).toContain(
      'line 3:20 models[1]: "resnet19" is not allowed; use resnet18, resnet34, resnet50, mobilenet_v2, resnet_tiny, resnet_tiny_bottleneck, mobilenet_v2_tiny',
    );
    expect(p.some((x) => x.includes('include[0].model: "../../x" is not a model; use resnet18'))).toBe(true);
  });

  test('includes must name every axis and an existing dataset; paths stay under the data root', () => {
    const p = problems(
      `${base}
include:
  - { dataset: mnist, color: rgb, strategy: finetune, model: resnet18 }
`.replace('path: simpsons', 'path: ../simpsons'),
    );
    expect(p.some((x) => x.includes('missing seed'))).toBe(true);
    expect(p.some((x) => x.includes('no dataset named mnist'))).toBe(true);
    expect(p.some((x) => x.includes('must be relative to --data-root'))).toBe(true);
  });

  test('strategies: finetune, freeze, probe, adapt, scratch and freezeUntil:<stage> are accepted; anything else, in the list or an include, is refused with the list', () => {
    const s = parseSweep(
      base.replace(
        'strategies: [finetune, freeze]',
        'strategies: [finetune, freeze, probe, adapt, scratch, "freezeUntil:layer4"]',
      ),
    );
    expect(new Set(s.cells.map((c) => c.spec.strategy))).toEqual(
      new Set(['finetune', 'freeze', 'probe', 'adapt', 'scratch', 'freezeUntil:layer4']),
    );
    // scratch starts from random weights: its cells say so, and every other cell keeps the sweep's.
    for (const c of s.cells) expect(c.spec.weights).toBe(c.spec.strategy === 'scratch' ? 'none' : 'pretrained');
    const p = problems(`${base.replace('strategies: [finetune, freeze]', 'strategies: [finetune, linear]')}
include:
  - { dataset: ants, color: "<b>purple</b>", strategy: "freezeUntil:../x", model: resnet18, seed: -7.5 }
`);
    expect(p).toContain(
      'line 10:24 strategies[1]: "linear" is not a strategy; use finetune, freeze, probe, adapt, scratch or freezeUntil:<stage>',
    );
    expect(p.some((x) => x.includes('include[0].strategy: "freezeUntil:../x" is not a strategy'))).toBe(true);
    expect(p.some((x) => x.includes('include[0].color: must be rgb or gray'))).toBe(true);
    expect(p.some((x) => x.includes('include[0].seed: must be an integer >= 0'))).toBe(true);
  });

  test("a freeze cell's id carries the strategy's revision (BatchNorm now in training mode); finetune ids are unchanged", () => {
    const spec: CellSpec = {
      ...STUDY_DEFAULTS,
      dataset: 'a',
      path: 'a',
      valFraction: null,
      color: 'rgb',
      strategy: 'finetune',
      model: 'resnet18',
      seed: 0,
    };
    const plainHash = (x: CellSpec): string => {
      const canon = (v: unknown): string =>
        Array.isArray(v)
          ? `[${v.map(canon).join(',')}]`
          : v && typeof v === 'object'
            ? `{${Object.keys(v)
                .sort()
                .map((k) => `${JSON.stringify(k)}:${canon((v as Record<string, unknown>)[k])}`)
                .join(',')}}`
            : JSON.stringify(v);
      return createHash('sha256').update(canon(x)).digest('hex').slice(0, 16);
    };
    expect(cellId(spec)).toBe(plainHash(spec));
    const freeze = { ...spec, strategy: 'freeze' };
    expect(cellId(freeze)).not.toBe(plainHash(freeze));
    expect(cellId(freeze)).toBe(plainHash({ ...freeze, strategyRevision: 2 } as CellSpec));
  });

  test('limits: an alias bomb, an oversized file, too many cells and weights outside the data root are sweep errors, not crashes', () => {
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x]',
      ...Array.from(
        { length: 8 },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`,
      ),
    ].join('\n');
    expect(problems(bomb)[0]).toMatch(/the file expands past what a sweep file needs/);
    expect(problems(`${base}\n# ${'x'.repeat(1 << 20)}\n`)[0]).toMatch(
      /^the file is \d+ bytes; a sweep file may hold 1048576 \(--max-sweep-bytes\)$/,
    );
    const many = base.replace('seeds: [0, 1]', `seeds: [${Array.from({ length: 1_300 }, (_, i) => i).join(', ')}]`);
    expect(problems(many)[0]).toBe(
      'the sweep expands to 10400 cells (2 datasets x 2 colors x 2 strategies x 1 models x 1300 seeds + 0 includes); a sweep may hold 10000 (--max-sweep-cells); split it into several sweeps',
    );
    expect(parseSweep(many, 'many.yaml', { maxCells: 20_000 }).cells).toHaveLength(10_400);
    for (const w of ['/etc/shadow', '../../secrets/w.pth', 'ok/../../x.pth']) {
      expect(
        problems(base.replace('lr: 0.01', `lr: 0.01\n  weights: "${w}"`)).some((p) =>
          p.includes('a weights file is a path relative to --data-root, without ..'),
        ),
        w,
      ).toBe(true);
    }
    expect(
      parseSweep(base.replace('lr: 0.01', 'lr: 0.01\n  weights: weights/resnet18-source.safetensors')).cells[0]!.spec
        .weights,
    ).toBe('weights/resnet18-source.safetensors');
  });

  test('the shipped examples parse: the full study has 16 cells; the demo pretrains, then transfers against two baselines; transfer has a pretrain cell and 4 of 6 target cells start from it', () => {
    const study = parseSweep(readFileSync(new URL('../../../examples/study.yaml', import.meta.url), 'utf8'));
    expect(study.cells).toHaveLength(16);
    expect(new Set(study.cells.map((c) => c.spec.model))).toEqual(new Set(['resnet18']));
    // The embedded default: a pretrain cell; finetune and scratch in rgb and gray; freeze from the
    // pretrain cell and from random weights in both.
    const demo = parseSweep(readFileSync(new URL('../../../examples/demo.yaml', import.meta.url), 'utf8'));
    expect(demo.stages.map((st) => [st.name, st.cellIds.length])).toEqual([
      ['pretrain', 1],
      ['target', 8],
    ]);
    const pretrain = `cell:${demo.cells[0]!.id}`;
    expect(
      demo.cells
        .slice(1)
        .map((c) => `${c.spec.color} ${c.spec.strategy} ${c.spec.weights === pretrain ? 'pretrain' : c.spec.weights}`)
        .sort(),
    ).toEqual([
      'gray finetune pretrain',
      'gray freeze none',
      'gray freeze pretrain',
      'gray scratch none',
      'rgb finetune pretrain',
      'rgb freeze none',
      'rgb freeze pretrain',
      'rgb scratch none',
    ]);
    const transfer = parseSweep(readFileSync(new URL('../../../examples/transfer.yaml', import.meta.url), 'utf8'));
    expect(transfer.stages.map((st) => [st.name, st.cellIds.length])).toEqual([
      ['pretrain', 1],
      ['target', 6],
    ]);
    expect(transfer.cells.filter((c) => c.spec.weights === `cell:${transfer.cells[0]!.id}`)).toHaveLength(4);
  });

  test('any hyper-parameter may be a list (an axis), globally, per dataset or per strategy; adding a value keeps every existing cell', () => {
    const axes = `
name: axes
datasets:
  - name: ants
    path: ants
    hyper: { batchSize: [16, 32] }
colors: [rgb]
strategies: [finetune, freeze]
models: [resnet18]
seeds: [0]
hyper:
  epochs: 3
  lr: [0.01, 0.001]
overrides:
  - match: { strategy: freeze }
    set: { lr: [0.1, 0.01, 0.001] }
`;
    const s = parseSweep(axes);
    const combos = (strategy: string): string[] =>
      s.cells
        .filter((c) => c.spec.strategy === strategy)
        .map((c) => `${c.spec.lr}/${c.spec.batchSize}`)
        .sort();
    // finetune: 2 learning rates x 2 batch sizes; freeze tunes its own 3 learning rates.
    expect(combos('finetune')).toEqual(['0.001/16', '0.001/32', '0.01/16', '0.01/32']);
    expect(combos('freeze')).toEqual(['0.001/16', '0.001/32', '0.01/16', '0.01/32', '0.1/16', '0.1/32']);
    expect(s.cells.every((c) => c.spec.epochs === 3)).toBe(true);
    expect(new Set(s.cells.map((c) => c.id)).size).toBe(10);
    // One more value: the cells already there keep their ids (a resubmission runs only the new ones).
    const more = parseSweep(axes.replace('lr: [0.01, 0.001]', 'lr: [0.01, 0.001, 0.0001]'));
    const before = new Set(s.cells.map((c) => c.id));
    expect(more.cells.filter((c) => before.has(c.id))).toHaveLength(10);
    expect(more.cells.filter((c) => !before.has(c.id)).map((c) => c.spec.lr)).toEqual([0.0001, 0.0001]);
    // A one-value setting is the same cell as before lists existed.
    const one = parseSweep(axes.replace('lr: [0.01, 0.001]', 'lr: 0.01').replace(/overrides:[\s\S]*$/, ''));
    expect(s.cells.map((c) => c.id)).toEqual(expect.arrayContaining(one.cells.map((c) => c.id)));
    // Lists are checked value by value; backends stays one list.
    const p = problems(
      axes.replace('lr: [0.01, 0.001]', 'lr: [0.01, -1]').replace('batchSize: [16, 32]', 'batchSize: []'),
    );
    expect(p.some((x) => /hyper\.lr: -1: out of range/.test(x))).toBe(true);
    expect(p.some((x) => /datasets\[0\]\.hyper\.batchSize: a list of values must not be empty/.test(x))).toBe(true);
    expect(
      problems(axes.replace('lr: [0.01, 0.001]', 'lr: [0.01, 0.01]')).some((x) => x.includes('has duplicates')),
    ).toBe(true);
    // The cell limit counts every value of every list.
    expect(() => parseSweep(axes, 'axes.yaml', { maxCells: 9 })).toThrow(/more than 9 cells/);
  });
});

describe('stages', () => {
  const staged = `
name: transfer
stages:
  - name: pretrain
    datasets: [{ name: source, path: source }]
    strategies: [finetune]
    models: [resnet_tiny]
    seeds: [0]
    hyper: { weights: none, epochs: 3, imageSize: 32 }
  - name: target
    datasets: [{ name: target, path: target }]
    colors: [rgb, gray]
    strategies: [finetune, freeze, scratch]
    models: [resnet_tiny]
    seeds: [0, 1]
    hyper: { weights: "stage:pretrain", epochs: 2, imageSize: 32 }
`;
  const byStrategy = (s: ReturnType<typeof parseSweep>, strategy: string) =>
    s.cells.filter((c) => c.spec.strategy === strategy && c.spec.dataset === 'target');

  test("a later stage's weights: stage:<name> become the one source cell's id (same model; the source stage's only seed); scratch cells start from nothing", () => {
    const s = parseSweep(staged);
    expect(s.stages.map((st) => [st.name, st.cellIds.length])).toEqual([
      ['pretrain', 1],
      ['target', 12],
    ]);
    const source = s.cells[0]!;
    expect(source.spec).toMatchObject({ dataset: 'source', weights: 'none', epochs: 3 });
    for (const c of [...byStrategy(s, 'finetune'), ...byStrategy(s, 'freeze')])
      expect(c.spec.weights).toBe(`cell:${source.id}`);
    // gray cells start from the rgb source too: the network is the same.
    expect(byStrategy(s, 'freeze').filter((c) => c.spec.color === 'gray')).toHaveLength(2);
    for (const c of byStrategy(s, 'scratch')) expect(c.spec.weights).toBe('none');
    // The source comes first: a cell's source is always before it.
    expect(s.cells.findIndex((c) => c.id === source.id)).toBe(0);
    expect(s.cells.map((c) => c.id)).toEqual([...s.stages[0]!.cellIds, ...s.stages[1]!.cellIds]);
  });

  test("a dependant's id holds its source's: changing the pretrain stage's epochs changes every dependant's id, and nothing else's", () => {
    const a = parseSweep(staged);
    const b = parseSweep(staged.replace('epochs: 3', 'epochs: 4'));
    const depA = [...byStrategy(a, 'finetune'), ...byStrategy(a, 'freeze')].map((c) => c.id);
    const depB = [...byStrategy(b, 'finetune'), ...byStrategy(b, 'freeze')].map((c) => c.id);
    expect(depA).toHaveLength(8);
    expect(depB.filter((id) => depA.includes(id))).toEqual([]);
    expect(byStrategy(b, 'scratch').map((c) => c.id)).toEqual(byStrategy(a, 'scratch').map((c) => c.id));
    expect(b.cells[0]!.id).not.toBe(a.cells[0]!.id);
    // The same file again: the same ids (a resubmission runs nothing finished).
    expect(parseSweep(staged).cells.map((c) => c.id)).toEqual(a.cells.map((c) => c.id));
    // A value added to an axis of the second stage: every existing cell keeps its id.
    const more = parseSweep(staged.replace('seeds: [0, 1]', 'seeds: [0, 1, 2]'));
    const before = new Set(a.cells.map((c) => c.id));
    expect(more.cells.filter((c) => before.has(c.id))).toHaveLength(a.cells.length);
    expect(more.cells.filter((c) => !before.has(c.id)).map((c) => c.spec.seed)).toEqual([2, 2, 2, 2, 2, 2]);
  });

  test('a source stage with the seeds of its dependants maps seed to seed; weights may be an axis (pretrained vs a stage)', () => {
    const s = parseSweep(
      staged
        .replace('seeds: [0]', 'seeds: [0, 1]')
        .replace('weights: "stage:pretrain"', 'weights: [pretrained, "stage:pretrain"]'),
    );
    const sources = new Map(s.cells.filter((c) => c.spec.dataset === 'source').map((c) => [c.id, c.spec.seed]));
    const staged2 = s.cells.filter((c) => c.spec.weights.startsWith('cell:'));
    expect(staged2).toHaveLength(8);
    for (const c of staged2) expect(sources.get(c.spec.weights.slice(5))).toBe(c.spec.seed);
    expect(s.cells.filter((c) => c.spec.weights === 'pretrained')).toHaveLength(8);
    // Each value of a weights axis is checked like a single one.
    expect(problems(staged.replace('weights: "stage:pretrain"', 'weights: [pretrained, "../x.pth"]'))[0]).toContain(
      'stages[1].hyper.weights: "../x.pth": a weights file is a path relative to --data-root, without ..',
    );
  });

  test('stage references: a later, unknown or own stage, or a stage in a sweep without stages, is an error naming the stage and the known ones', () => {
    const later = problems(staged.replace('hyper: { weights: none,', 'hyper: { weights: "stage:target",'));
    expect(later).toEqual([
      'line 9:14 stages[0].hyper.weights: stage target comes after stage pretrain; a stage starts from an earlier one: none',
    ]);
    const unknown = problems(staged.replace('"stage:pretrain"', '"stage:pretrian"'));
    expect(unknown).toEqual([
      'line 16:14 stages[1].hyper.weights: no stage named pretrian; stages: pretrain, target (a stage starts from an earlier one)',
    ]);
    const self = problems(staged.replace('"stage:pretrain"', '"stage:target"'));
    expect(self[0]).toContain(
      'stages[1].hyper.weights: stage target cannot start from itself; earlier stages: pretrain',
    );
    expect(problems(base.replace('lr: 0.01', 'lr: 0.01\n  weights: "stage:x"'))[0]).toContain(
      'hyper.weights: stage:x names a stage, but this sweep has no stages',
    );
    // cell:<id> is what a stage reference becomes; a file does not name cells.
    expect(problems(base.replace('lr: 0.01', 'lr: 0.01\n  weights: "cell:abc"'))[0]).toContain(
      "is what a cell's stage:<name> becomes",
    );
    // Stage names are unique; with stages, the body keys belong in each stage.
    const dup = problems(staged.replace('name: target\n', 'name: pretrain\n').replace('"stage:pretrain"', 'none'));
    expect(dup.some((x) => x.includes('stages[1].name: stage names must be unique (pretrain is used twice)'))).toBe(
      true,
    );
    expect(problems(`models: [resnet18]\n${staged}`)).toContain(
      'line 1:1 models: with stages, models belongs in each stage',
    );
    expect(problems(staged.replace('    seeds: [0]\n', '    seeds: [0]\n    sedes: [1]\n'))[0]).toMatch(
      /stages\[0\]\.sedes: unknown key; allowed: name, datasets/,
    );
  });

  test('a dependant needs exactly one source cell: none of its model, none of its seed, or several (two colors) are errors that say how to fix them', () => {
    const twoColors = problems(
      staged.replace('    strategies: [finetune]\n', '    colors: [rgb, gray]\n    strategies: [finetune]\n'),
    );
    expect(twoColors[0]).toMatch(
      /^stage target: cell target rgb finetune resnet_tiny seed 0 \(weights: stage:pretrain\): 2 cells of stage pretrain match \(source rgb finetune resnet_tiny seed 0 \[[0-9a-f]{8}\]; source gray finetune resnet_tiny seed 0 \[[0-9a-f]{8}\]\); a stage that others start from has one cell per model and seed: split it into stages/,
    );
    const model = problems(
      staged.replace('models: [resnet_tiny]\n    seeds: [0, 1]', 'models: [resnet18]\n    seeds: [0, 1]'),
    );
    expect(model[0]).toContain('stage pretrain has no resnet18 cell (its models: resnet_tiny)');
    const seeds = problems(staged.replace('seeds: [0]', 'seeds: [5, 6]'));
    expect(seeds[0]).toContain('stage pretrain has resnet_tiny cells for seeds 5, 6, not 0');
  });
});
