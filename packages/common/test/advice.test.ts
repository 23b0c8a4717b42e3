import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import {
  ADVICE_NOTE,
  ADVICE_RULE,
  advise,
  adviceLines,
  domainLevelOfShift,
  winnerOfMargin,
  type AdviceInputs,
  type DomainLevel,
} from '@ferry/common';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const base: AdviceInputs = { classes: 4, imagesPerClass: 100, domain: { level: 'close' } };

describe('the advisor rule', () => {
  test('close domain, some images, few classes: about equal, every input reported with 0 points', () => {
    const a = advise(base);
    expect(a.winner).toBe('about equal');
    expect(a.marginPoints).toBe(0);
    expect(a.heuristic).toBe(true);
    expect(a.reasons.map((r) => [r.input, r.points])).toEqual([
      ['classes', 0],
      ['images per class', 0],
      ['domain', 0],
    ]);
  });

  test('a far domain or poorly separated frozen features: finetune wins by a lot (a)', () => {
    const far = advise({ ...base, domain: { level: 'far', shift: 0.4 } });
    expect([far.winner, far.marginPoints]).toEqual(['finetune', ADVICE_RULE.domainPoints.far]);
    expect(far.rangePoints[0]).toBeGreaterThan(0);
    const poor = advise({ ...base, domain: { level: 'moderate' }, frozenAccuracy: 0.4 });
    expect(poor.winner).toBe('finetune');
    expect(poor.marginPoints).toBe(ADVICE_RULE.domainPoints.moderate + ADVICE_RULE.poorSeparability.points);
  });

  test('close domain, few images per class, separable frozen features: freeze (b)', () => {
    const a = advise({ ...base, imagesPerClass: 12, frozenAccuracy: 0.97 });
    expect(a.winner).toBe('freeze');
    expect(a.marginPoints).toBe(ADVICE_RULE.fewImages.points + ADVICE_RULE.highSeparability.points);
    expect(a.rangePoints[1]).toBeLessThan(0);
  });

  test('many images per class and many classes lean to finetune (c)', () => {
    expect(advise({ ...base, imagesPerClass: 5000 }).marginPoints).toBe(ADVICE_RULE.manyImages.points);
    const many = advise({ ...base, classes: 257, imagesPerClass: 95 });
    expect([many.winner, many.marginPoints]).toEqual(['finetune', ADVICE_RULE.manyClasses.points]);
    expect(advise({ ...base, classes: 20 }).marginPoints).toBe(ADVICE_RULE.someClasses.points);
  });

  test('the margin is capped at the headroom above the frozen features', () => {
    const a = advise({ ...base, domain: { level: 'far', shift: 0.5 }, frozenAccuracy: 0.93 });
    expect(a.marginPoints).toBe(7);
    expect(a.reasons.at(-1)).toMatchObject({
      input: 'headroom',
      points: 7 - (ADVICE_RULE.domainPoints.far + ADVICE_RULE.highSeparability.points),
    });
  });

  test('a measured BatchNorm shift maps to close / moderate / far at the stated thresholds', () => {
    expect([0, 0.149, 0.15, 0.299, 0.3, 1].map(domainLevelOfShift)).toEqual([
      'close',
      'close',
      'moderate',
      'moderate',
      'far',
      'far',
    ]);
    expect([-3, -2.9, 2.9, 3].map(winnerOfMargin)).toEqual(['freeze', 'about equal', 'about equal', 'finetune']);
  });

  test('the text form shows every input, the prediction and says it is a heuristic', () => {
    const lines = adviceLines(advise({ ...base, domain: { level: 'far', shift: 0.41 }, frozenAccuracy: 0.6 }));
    expect(lines.join('\n')).toMatch(/domain +\+15 +0\.410 BatchNorm shift: far/);
    expect(lines.at(-2)).toMatch(/^prediction: finetune wins by about \d+ points/);
    expect(lines.at(-1)).toBe(ADVICE_NOTE);
    expect(ADVICE_NOTE).toMatch(/heuristic/);
  });
});

/**
 * The study's published table (docs/study.md): ResNet18, 15 epochs, best val accuracy. Images per
 * class are the protocol's 80% training share of the dataset's images; the domain is a judgement
 * (the article's own words), the same for a gray row as for its colour row.
 */
const PUBLISHED: readonly {
  row: string;
  classes: number;
  images: number;
  domain: DomainLevel;
  finetune: number;
  freeze: number;
}[] = [
  { row: 'Hymenoptera', classes: 2, images: 397, domain: 'close', finetune: 95.4, freeze: 96.1 },
  { row: 'Hymenoptera gray', classes: 2, images: 397, domain: 'close', finetune: 92.2, freeze: 90.2 },
  { row: 'Simpsons', classes: 20, images: 19548, domain: 'far', finetune: 92.5, freeze: 64.2 },
  { row: 'Dogs vs Cats', classes: 2, images: 25000, domain: 'close', finetune: 98.9, freeze: 98.1 },
  { row: 'Caltech 256', classes: 257, images: 30607, domain: 'close', finetune: 67.4, freeze: 54.3 },
];

describe("the rule on the study's published table", () => {
  test('its agreement count is the one docs/advisor.md states, row by row', () => {
    const doc = readFileSync(path.join(ROOT, 'docs/advisor.md'), 'utf8');
    let agree = 0;
    for (const p of PUBLISHED) {
      const advice = advise({
        classes: p.classes,
        imagesPerClass: (0.8 * p.images) / p.classes,
        domain: { level: p.domain },
      });
      const published = winnerOfMargin(p.finetune - p.freeze);
      if (advice.winner === published) agree++;
      const line = doc.split('\n').find((l) => l.startsWith(`| ${p.row} |`));
      expect(line, p.row).toBeDefined();
      const cells = line!.split('|').map((c) => c.trim());
      expect(cells, p.row).toContain(advice.winner);
      expect(line, p.row).toContain(`${advice.marginPoints > 0 ? '+' : ''}${advice.marginPoints}`);
      expect(cells.at(-2), p.row).toBe(advice.winner === published ? 'yes' : 'no');
    }
    expect(doc).toContain(`agrees with the published winner on ${agree} of ${PUBLISHED.length} rows`);
  });
});
