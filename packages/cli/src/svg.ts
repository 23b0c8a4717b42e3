import type { EpochMetrics } from '@ferry/core';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

/** Loss and accuracy curves (train and val per epoch) as a standalone SVG. */
export function curvesSvg(title: string, epochs: readonly EpochMetrics[], bestEpoch: number): string {
  const W = 360;
  const H = 240;
  const pad = { l: 44, r: 12, t: 28, b: 34 };
  const panel = (
    x0: number,
    name: string,
    series: { label: string; color: string; values: number[] }[],
    yMin: number,
    yMax: number,
  ): string => {
    const n = Math.max(1, epochs.length - 1);
    const px = (i: number): number => x0 + pad.l + (i / n) * (W - pad.l - pad.r);
    const py = (v: number): number => pad.t + (1 - (v - yMin) / (yMax - yMin || 1)) * (H - pad.t - pad.b);
    const grid = [0, 0.25, 0.5, 0.75, 1]
      .map((f) => {
        const v = yMin + f * (yMax - yMin);
        return `<line x1="${x0 + pad.l}" x2="${x0 + W - pad.r}" y1="${py(v)}" y2="${py(v)}" stroke="#ddd"/><text x="${x0 + pad.l - 4}" y="${py(v) + 4}" text-anchor="end" font-size="10">${v.toFixed(2)}</text>`;
      })
      .join('');
    const lines = series
      .map((s, k) => {
        const pts = s.values.map((v, i) => `${px(i).toFixed(1)},${py(v).toFixed(1)}`).join(' ');
        return `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts}"/><text x="${x0 + pad.l + 8 + k * 60}" y="${pad.t - 8}" font-size="11" fill="${s.color}">${esc(s.label)}</text>`;
      })
      .join('');
    const best =
      bestEpoch >= 0
        ? `<line x1="${px(bestEpoch)}" x2="${px(bestEpoch)}" y1="${pad.t}" y2="${H - pad.b}" stroke="#999" stroke-dasharray="3 3"/>`
        : '';
    return `<g><text x="${x0 + W / 2}" y="${H - 6}" text-anchor="middle" font-size="11">epoch (${esc(name)})</text>${grid}${best}${lines}</g>`;
  };
  const losses = epochs.flatMap((e) => [e.trainLoss, e.valLoss]);
  const maxLoss = Math.max(0.1, ...losses.filter(Number.isFinite));
  const body =
    panel(
      0,
      'loss',
      [
        { label: 'train', color: '#1f77b4', values: epochs.map((e) => e.trainLoss) },
        { label: 'val', color: '#d62728', values: epochs.map((e) => e.valLoss) },
      ],
      0,
      maxLoss,
    ) +
    panel(
      W,
      'accuracy',
      [
        { label: 'train', color: '#1f77b4', values: epochs.map((e) => e.trainAccuracy) },
        { label: 'val', color: '#d62728', values: epochs.map((e) => e.valAccuracy) },
      ],
      0,
      1,
    );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 20}" font-family="sans-serif"><text x="8" y="14" font-size="12">${esc(title)}</text><g transform="translate(0,10)">${body}</g></svg>\n`;
}
