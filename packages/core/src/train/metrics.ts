/** Pure metric functions over plain arrays. */

/** Row = true class, column = predicted class (torch/sklearn convention). */
export function confusionMatrix(
  labels: ArrayLike<number>,
  predictions: ArrayLike<number>,
  numClasses: number,
): number[][] {
  const m = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  for (let i = 0; i < labels.length; i++) {
    const row = m[labels[i]!];
    if (row) row[predictions[i]!] = (row[predictions[i]!] ?? 0) + 1;
  }
  return m;
}

export function addConfusion(into: number[][], other: readonly (readonly number[])[]): void {
  other.forEach((row, i) => row.forEach((v, j) => (into[i]![j]! += v)));
}

/** Per-class recall; NaN for a class with no samples. */
export function perClassAccuracy(cm: readonly (readonly number[])[]): number[] {
  return cm.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    return total === 0 ? Number.NaN : (row[i] ?? 0) / total;
  });
}

export function accuracyOf(cm: readonly (readonly number[])[]): number {
  let correct = 0;
  let total = 0;
  cm.forEach((row, i) => {
    correct += row[i] ?? 0;
    total += row.reduce((a, b) => a + b, 0);
  });
  return total === 0 ? 0 : correct / total;
}

/** Index of the maximum of each row of a [rows, cols] array. */
export function argmaxRows(values: ArrayLike<number>, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    let bestV = -Infinity;
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c]!;
      if (v > bestV) {
        bestV = v;
        best = c;
      }
    }
    out[r] = best;
  }
  return out;
}

/** torch.optim.lr_scheduler.StepLR: lr * gamma^floor(epoch / stepSize), epoch counted from 0. */
export function stepLr(baseLr: number, epoch: number, stepSize: number, gamma: number): number {
  if (stepSize <= 0) return baseLr;
  return baseLr * gamma ** Math.floor(epoch / stepSize);
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Sample standard deviation (n - 1); 0 for a single value. */
export function std(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
}
