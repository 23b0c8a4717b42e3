import { describe, expect, test } from 'vitest';
import {
  HYPER_PARAMETERS,
  HYPER_PARAMETER_DEFAULTS,
  HYPER_PARAMETER_NAMES,
  TRAINING_DEFAULTS,
  TRAINING_HYPER_PARAMETER_NAMES,
  hyperParameterProblem,
  hyperParameterRange,
  parseCellSpec,
  trainingHyperParameters,
  type CellSpec,
  type HyperParameterDefinition,
} from '@ferry/common';

describe('the hyper-parameter table', () => {
  test('holds the study defaults (docs/study.md), in the order help texts list them', () => {
    expect(HYPER_PARAMETER_DEFAULTS).toEqual({
      epochs: 15,
      batchSize: 32,
      lr: 0.001,
      momentum: 0.9,
      weightDecay: 0,
      lrStepEpochs: 7,
      lrGamma: 0.1,
      imageSize: 224,
      featureCache: true,
      augmentViews: 1,
      microBatch: 0,
      workers: 1,
    });
    expect(Object.keys(HYPER_PARAMETER_DEFAULTS)).toEqual(HYPER_PARAMETER_NAMES);
  });

  test('the training defaults leave out the cluster settings', () => {
    const { workers, ...training } = HYPER_PARAMETER_DEFAULTS;
    expect(workers).toBe(1);
    expect(TRAINING_DEFAULTS).toEqual(training);
  });

  test('every entry is printable: a description, a default of its kind, distinct long flags', () => {
    const entries: [string, HyperParameterDefinition][] = Object.entries(HYPER_PARAMETERS);
    for (const [name, d] of entries) {
      expect(d.what.length, name).toBeGreaterThan(0);
      expect(typeof d.default, name).toBe(d.kind === 'boolean' ? 'boolean' : 'number');
      expect(hyperParameterProblem(name as keyof typeof HYPER_PARAMETERS, d.default), name).toBeNull();
    }
    const flags = entries.flatMap(([, d]) => (d.flag ? [d.flag] : []));
    expect(new Set(flags).size).toBe(flags.length);
    expect(HYPER_PARAMETERS.batchSize.flag).toBe('--batch');
    expect(HYPER_PARAMETERS.weightDecay.flag).toBe('--wd');
    expect(HYPER_PARAMETERS.lrStepEpochs.flag).toBe('--lr-step');
  });

  test('ranges as text', () => {
    expect(hyperParameterRange('epochs')).toBe('>= 1');
    expect(hyperParameterRange('lr')).toBe('> 0');
    expect(hyperParameterRange('momentum')).toBe('>= 0 and < 1');
    expect(hyperParameterRange('imageSize')).toBe('>= 16');
    expect(hyperParameterRange('featureCache')).toBe('');
  });

  test('values are checked by kind and range', () => {
    expect(hyperParameterProblem('epochs', 1.5)).toBe('must be an integer (got 1.5)');
    expect(hyperParameterProblem('lr', 'x')).toBe('must be a number (got "x")');
    expect(hyperParameterProblem('lr', Infinity)).toBe('must be a number (got null)');
    expect(hyperParameterProblem('lr', 0)).toBe('out of range (got 0)');
    expect(hyperParameterProblem('lr', 1e-9)).toBeNull();
    expect(hyperParameterProblem('momentum', 1)).toBe('out of range (got 1)');
    expect(hyperParameterProblem('momentum', 0)).toBeNull();
    expect(hyperParameterProblem('imageSize', 15)).toBe('out of range (got 15)');
    expect(hyperParameterProblem('lrStepEpochs', 0)).toBeNull();
    expect(hyperParameterProblem('featureCache', 1)).toBe('must be true or false (got 1)');
    expect(hyperParameterProblem('featureCache', false)).toBeNull();
  });
});

describe("a cell's specification from outside the process", () => {
  const spec: CellSpec = {
    ...HYPER_PARAMETER_DEFAULTS,
    dataset: 'ants',
    path: 'ants',
    valFraction: null,
    color: 'gray',
    strategy: 'freeze',
    model: 'resnet18',
    seed: 2,
    weights: 'pretrained',
    backends: ['torch'],
  };

  test('a valid one parses to itself (a proto message: valFraction absent is null, unknown fields dropped)', () => {
    expect(parseCellSpec(spec, 'test')).toEqual(spec);
    const wire: Record<string, unknown> = { ...spec, extra: 1 };
    delete wire['valFraction'];
    expect(parseCellSpec(wire, 'test')).toEqual(spec);
    expect(parseCellSpec({ ...spec, valFraction: 0.2 }, 'test').valFraction).toBe(0.2);
  });

  test('every wrong field is a coded error naming where and what, never a cast', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ epochs: 0 }, /^cell c1: epochs out of range \(got 0\); allowed: >= 1$/],
      [{ lr: 'x' }, /lr must be a number \(got "x"\)/],
      [{ featureCache: 1 }, /featureCache must be true or false/],
      [{ color: 'blue' }, /color must be rgb or gray \(got "blue"\)/],
      [{ seed: -1 }, /seed must be an integer >= 0/],
      [{ valFraction: 1 }, /valFraction must be a number above 0 and below 1/],
      [{ dataset: '' }, /dataset must be a non-empty string/],
      [{ backends: [1] }, /backends must be a list of backend names/],
    ];
    for (const [change, message] of cases) {
      let caught: unknown;
      try {
        parseCellSpec({ ...spec, ...change }, 'cell c1');
      } catch (e) {
        caught = e;
      }
      expect((caught as { code?: string }).code, JSON.stringify(change)).toBe('FERRY_ERR_INVALID_ARGUMENT');
      expect((caught as Error).message).toMatch(message);
    }
    expect(() => parseCellSpec(null, 'x')).toThrow(/x: a cell specification must be an object/);
  });

  test("the engine's hyper-parameters are the table's training ones, picked by name", () => {
    const picked = trainingHyperParameters({ ...spec, epochs: 3 });
    expect(Object.keys(picked)).toEqual(TRAINING_HYPER_PARAMETER_NAMES);
    expect(picked).toEqual({ ...TRAINING_DEFAULTS, epochs: 3 });
    expect(TRAINING_HYPER_PARAMETER_NAMES).not.toContain('workers');
  });
});
