/**
 * The advisor's rule: which of finetune and freeze wins on a dataset, predicted before either is
 * trained, from a few numbers about the data (class count, images per class, distance from the
 * backbone's source domain, and, when measured, how well the frozen features already separate the
 * classes). A heuristic: each input adds points to the predicted margin (finetune minus freeze),
 * every step is reported, and docs/advisor.md counts how often it agreed with measured verdicts.
 */

/** How far the data is from the backbone's source domain: measured (BatchNorm shift) or stated. */
export type DomainLevel = 'close' | 'moderate' | 'far';

export const DOMAIN_LEVELS: readonly DomainLevel[] = ['close', 'moderate', 'far'];

/** The predicted (or measured) winner; `about equal` within ADVICE_RULE.equalBandPoints. */
export type AdviceWinner = 'finetune' | 'freeze' | 'about equal';

export interface AdviceInputs {
  /** Number of classes. */
  readonly classes: number;
  /** Training images per class (the median over classes). */
  readonly imagesPerClass: number;
  /**
   * The domain: `level`, and `shift` when measured (the mean BatchNorm shift, 0 = the source's
   * statistics, 1 = disjoint; see `domainLevelOfShift`). Without `shift` the level is a judgement.
   */
  readonly domain: { readonly level: DomainLevel; readonly shift?: number };
  /** Held-out accuracy (0..1) of simple classifiers on the frozen features, when measured. */
  readonly frozenAccuracy?: number;
}

/** One input of the rule: its value, the points it added to the margin, and why. */
export interface AdviceReason {
  readonly input: string;
  readonly value: string;
  readonly points: number;
  readonly why: string;
}

/** The advisor's answer. Plain data (results.json, the dashboard). */
export interface Advice {
  /** Always true: the answer is a rule of thumb, not a measurement. */
  readonly heuristic: true;
  readonly winner: AdviceWinner;
  /** Predicted finetune accuracy minus freeze accuracy, in points. */
  readonly marginPoints: number;
  /** A rough range for the margin, in points. */
  readonly rangePoints: readonly [number, number];
  readonly reasons: readonly AdviceReason[];
  readonly note: string;
}

/** The rule's constants (docs/advisor.md states and justifies each). */
export const ADVICE_RULE = {
  /** |margin| below this many points: about equal (the study's rows differ by less on close data). */
  equalBandPoints: 3,
  domainPoints: { close: 0, moderate: 5, far: 15 } as Readonly<Record<DomainLevel, number>>,
  /** BatchNorm shift (mean Hellinger distance) at and above which the domain is moderate / far. */
  shiftModerate: 0.15,
  shiftFar: 0.3,
  manyClasses: { atLeast: 100, points: 8 },
  someClasses: { atLeast: 10, points: 3 },
  fewImages: { below: 30, points: -3 },
  manyImages: { atLeast: 1000, points: 2 },
  /** Separability = (accuracy - chance) / (1 - chance) of the frozen features. */
  poorSeparability: { below: 0.6, points: 5 },
  highSeparability: { atLeast: 0.9, points: -2 },
} as const;

export const ADVICE_NOTE =
  'This is a heuristic (a rule of thumb from class count, images per class, domain distance and frozen-feature accuracy), not a measurement: run the sweep for the answer.';

/** The domain level of a measured BatchNorm shift (ADVICE_RULE's thresholds). */
export function domainLevelOfShift(shift: number): DomainLevel {
  if (shift >= ADVICE_RULE.shiftFar) return 'far';
  if (shift >= ADVICE_RULE.shiftModerate) return 'moderate';
  return 'close';
}

/** The winner of a margin (finetune minus freeze, points): about equal inside the band. */
export function winnerOfMargin(marginPoints: number): AdviceWinner {
  if (marginPoints >= ADVICE_RULE.equalBandPoints) return 'finetune';
  if (marginPoints <= -ADVICE_RULE.equalBandPoints) return 'freeze';
  return 'about equal';
}

const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;

function domainReason(d: AdviceInputs['domain']): AdviceReason {
  const points = ADVICE_RULE.domainPoints[d.level];
  const measured = d.shift !== undefined;
  const value = measured ? `${d.shift!.toFixed(3)} BatchNorm shift: ${d.level}` : `${d.level} (stated)`;
  const why = {
    close: 'close to the source domain: the frozen features fit, finetuning has little to correct',
    moderate: 'moderately far from the source domain: finetuning can adapt the features',
    far: 'far from the source domain: the frozen features miss what matters, finetuning wins most',
  }[d.level];
  return { input: 'domain', value, points, why };
}

function classesReason(classes: number): AdviceReason {
  const { manyClasses, someClasses } = ADVICE_RULE;
  const value = String(classes);
  if (classes >= manyClasses.atLeast)
    return {
      input: 'classes',
      value,
      points: manyClasses.points,
      why: `${manyClasses.atLeast}+ classes: fine distinctions a new head alone cannot draw (the study's Caltech 256)`,
    };
  if (classes >= someClasses.atLeast)
    return { input: 'classes', value, points: someClasses.points, why: `${someClasses.atLeast}-99 classes` };
  return { input: 'classes', value, points: 0, why: `fewer than ${someClasses.atLeast} classes: no effect` };
}

function imagesReason(perClass: number): AdviceReason {
  const { fewImages, manyImages } = ADVICE_RULE;
  const value = String(Math.round(perClass));
  if (perClass < fewImages.below)
    return {
      input: 'images per class',
      value,
      points: fewImages.points,
      why: `fewer than ${fewImages.below}: finetuning every layer overfits ("small and similar: freeze")`,
    };
  if (perClass >= manyImages.atLeast)
    return {
      input: 'images per class',
      value,
      points: manyImages.points,
      why: `${manyImages.atLeast}+: enough to finetune every layer ("large: finetune")`,
    };
  return {
    input: 'images per class',
    value,
    points: 0,
    why: `${fewImages.below}-${manyImages.atLeast - 1}: no effect`,
  };
}

function separabilityReason(accuracy: number, classes: number): AdviceReason {
  const chance = 1 / classes;
  const s = (accuracy - chance) / (1 - chance);
  const value = `${pct(accuracy)} held out (chance ${pct(chance)}, separability ${s.toFixed(2)})`;
  const { poorSeparability, highSeparability } = ADVICE_RULE;
  if (s < poorSeparability.below)
    return {
      input: 'frozen features',
      value,
      points: poorSeparability.points,
      why: `separability below ${poorSeparability.below}: a head on these features has little to work with`,
    };
  if (s >= highSeparability.atLeast)
    return {
      input: 'frozen features',
      value,
      points: highSeparability.points,
      why: `separability ${highSeparability.atLeast}+: the frozen features already separate the classes`,
    };
  return { input: 'frozen features', value, points: 0, why: 'separability in between: no effect' };
}

/**
 * The advisor's rule (ADVICE_RULE): the margin finetune minus freeze is the sum of each input's
 * points, capped by the headroom above the frozen features' accuracy when that is measured (freeze
 * reaches at least about that, finetune at most 100%); the winner is the margin's, with a band for
 * about equal. A heuristic: every input and its points are in `reasons`.
 */
export function advise(inputs: AdviceInputs): Advice {
  const reasons: AdviceReason[] = [
    classesReason(inputs.classes),
    imagesReason(inputs.imagesPerClass),
    domainReason(inputs.domain),
  ];
  if (inputs.frozenAccuracy !== undefined) reasons.push(separabilityReason(inputs.frozenAccuracy, inputs.classes));
  let margin = reasons.reduce((a, r) => a + r.points, 0);
  if (inputs.frozenAccuracy !== undefined) {
    const headroom = Math.round(100 * (1 - inputs.frozenAccuracy));
    if (margin > headroom) {
      reasons.push({
        input: 'headroom',
        value: `${headroom} points above the frozen features`,
        points: headroom - margin,
        why: 'finetuning cannot gain more than the frozen features leave: the margin is capped there',
      });
      margin = headroom;
    }
  }
  const spread = Math.max(ADVICE_RULE.equalBandPoints, Math.abs(margin) / 2);
  return {
    heuristic: true,
    winner: winnerOfMargin(margin),
    marginPoints: margin,
    rangePoints: [Math.round(margin - spread), Math.round(margin + spread)],
    reasons,
    note: ADVICE_NOTE,
  };
}

/** The advice as text lines: the reasoning, one input a line, then the prediction and the note. */
export function adviceLines(advice: Advice): string[] {
  const signed = (p: number): string => (p > 0 ? `+${p}` : p < 0 ? `${p}` : ' 0');
  const width = Math.max(...advice.reasons.map((r) => r.input.length));
  const lines = advice.reasons.map(
    (r) => `  ${r.input.padEnd(width)}  ${signed(r.points).padStart(3)}  ${r.value}: ${r.why}`,
  );
  const [low, high] = advice.rangePoints;
  const m = advice.marginPoints;
  const head =
    advice.winner === 'about equal'
      ? `about equal (finetune ${signed(m)} points, range ${low} to ${high})`
      : `${advice.winner} wins by about ${Math.abs(m)} points (finetune minus freeze ${signed(m)}, range ${low} to ${high})`;
  return [...lines, `prediction: ${head}`, advice.note];
}
